"""Serving cost of registered models: CPU latency and throughput, in process and over HTTP.

For each model (default: the champion, `models:/bertops@champion`; add e.g. a distilled student
with `--model student=models:/bertops-student@champion`), on the same synthetic inputs (rows of
every task the model serves, cycled; texts of fixed length per task type):
  pyfunc:  `mlflow.pyfunc.load_model(uri).predict(DataFrame)` in this process;
  http:    the scoring server `bertops serve` starts (`mlflow models serve --env-manager local`),
           on loopback, one request at a time, started and stopped here;
  batch 1: --requests one-row requests, latency p50 / p95 in ms (after --warmup requests);
  batch N: --batches requests of --batch rows, throughput in rows/s;
and the model's size on disk (the MLflow model directory: weights, tokenizer, code). Prints a
Markdown table. Bounded: (requests + batches + warmup) requests per path, then it stops.

    .venv/bin/python bench/serving.py [--model NAME=URI ...] [--requests 200] [--batch 32]
        [--batches 20] [--threads 1]

A model path (an MLflow model directory) works as a URI too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path

from bertops.env import apply_offline_env

TEXTS = {  # per task type: (text, text_pair) of a typical length
    "sequence_classification": ("A warm, funny and clever film that never quite finds its feet in the last act.", None),
    "pair_classification": ("He sat on the bank of the river and watched the boats.",
                            "She works at the bank on the corner of the high street."),
    "token_classification": ("Call the save method on a Model instance after you set the field value .", None),
    "extractive_qa": ("Which word means: a domesticated carnivorous mammal?",
                      "The dog barked all night, and the neighbours complained to the council about the noise. "
                      * 6),
}
COLUMNS = ["task", "text", "text_pair"]


def _rows(python_model, n: int) -> list[list]:
    tasks = sorted(python_model.models)
    out = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        kind = python_model.models[task].tasks[task].type
        text, pair = TEXTS.get(kind, TEXTS["sequence_classification"])
        out.append([task, text, pair])
    return out


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _percentile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1] if len(xs) > 1 else xs[0]


def _measure(call, rows: list[list], args) -> dict:
    """call(list of rows) -> None. Batch-1 latencies (ms) and batch-N throughput (rows/s)."""
    for i in range(args.warmup):
        call(rows[i % len(rows):i % len(rows) + 1])
    lat = []
    for i in range(args.requests):
        t = time.perf_counter()
        call([rows[i % len(rows)]])
        lat.append((time.perf_counter() - t) * 1000)
    batch = [rows[i % len(rows)] for i in range(args.batch)]
    t = time.perf_counter()
    for _ in range(args.batches):
        call(batch)
    rate = args.batch * args.batches / (time.perf_counter() - t)
    return {"p50": statistics.median(lat), "p95": _percentile(lat, 95), "rows_s": rate}


def _http(local: Path, rows: list[list], args) -> dict:
    from bertops.cli import scoring_server
    from bertops.errors import BertopsError

    threads = str(args.threads)
    try:
        with scoring_server(str(local), env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}) as (url, _):

            def call(batch):
                body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": batch}}).encode()
                req = urllib.request.Request(url + "/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=120) as r:
                    assert r.status == 200
                    r.read()

            return _measure(call, rows, args)
    except BertopsError as e:
        raise SystemExit(f"bench: {e}") from None


def main(argv=None) -> int:
    apply_offline_env()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", metavar="NAME=URI",
                    help="a model to measure (repeatable; default champion=models:/bertops@champion)")
    ap.add_argument("--requests", type=int, default=200, help="batch-1 requests per path (default 200)")
    ap.add_argument("--batch", type=int, default=32, help="rows per request for throughput (default 32)")
    ap.add_argument("--batches", type=int, default=20, help="throughput requests per path (default 20)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads, here and in the server")
    args = ap.parse_args(argv)

    import mlflow
    import pandas as pd
    import torch

    from bertops.tracking import tracking_uri

    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    torch.set_num_threads(args.threads)
    models = [m.split("=", 1) for m in (args.model or ["champion=models:/bertops@champion"])]
    table = []
    for name, uri in models:
        local = Path(uri) if Path(uri).is_dir() else Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
        loaded = mlflow.pyfunc.load_model(str(local))
        rows = _rows(loaded.unwrap_python_model(), 64)
        pyfunc = _measure(lambda batch, m=loaded: m.predict(pd.DataFrame(batch, columns=COLUMNS)), rows, args)
        http = _http(local, rows, args)
        for path, r in (("pyfunc", pyfunc), ("http", http)):
            table.append((name, path, r["p50"], r["p95"], r["rows_s"], _size_mb(local)))
        print(f"{name}: done", file=sys.stderr)

    print(f"CPU, {args.threads} torch thread(s); batch 1: {args.requests} requests; batch {args.batch}: "
          f"{args.batches} requests; inputs cycle the model's tasks\n")
    print(f"| model | path | batch 1 p50 (ms) | batch 1 p95 (ms) | batch {args.batch} rows/s | size (MB) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, path, p50, p95, rate, size in table:
        print(f"| {name} | {path} | {p50:.1f} | {p95:.1f} | {rate:.0f} | {size:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
