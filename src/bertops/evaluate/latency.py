"""CPU latency of a fine-tuned model at batch 1, in process: a column of the evaluation report's
rows comparing ways to adapt the encoder (bertops.evaluate.modes).

    requests(inputs, n) -> [(task, input)]
        n one-example requests cycling the tasks in order, each task's inputs in order (the same
        list is given to every model measured, so every row answers the same requests).
    measure(model_dirs, reqs, warmup=5, threads=1) -> {"p50_ms", "p95_ms", "requests"}
        Loads each distinct model dir once (MultiTaskModel.from_pretrained), answers `warmup`
        requests untimed, then times each request: `model.predict(task, [input], batch_size=1)`,
        i.e. tokenize, one forward pass, decode (what the served model runs per request of one
        row, without HTTP, JSON or MLflow: bench/serving.py measures those paths). torch runs on
        `threads` CPU threads during the measurement (restored after).
    conditions(threads) -> {"cpu_count", "threads", "loadavg_1m"}: what the machine was doing.
    probe(specs, task_params, split, n, threads) -> (measure for a row's model dirs, conditions)

Latency is a property of the machine and its load as much as of the model: compare rows of one
report (measured minutes apart on the same machine), not reports of different runs.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def requests(inputs: Mapping[str, Sequence[Any]], n: int) -> list[tuple[str, Any]]:
    """n requests: task i % len(tasks), that task's input (i // len(tasks)) % len(its inputs)."""
    tasks = [t for t in inputs if inputs[t]]
    if not tasks or n < 1:
        return []
    out = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        out.append((task, inputs[task][(i // len(tasks)) % len(inputs[task])]))
    return out


def percentile(xs: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method: within the observed range)."""
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def measure(model_dirs: Mapping[str, str | Path], reqs: Sequence[tuple[str, Any]], warmup: int = 5,
            threads: int = 1) -> dict:
    """See the module docstring. model_dirs: {task: the model dir that serves it}."""
    import torch

    from bertops.model.multitask import MultiTaskModel

    loaded: dict[str, Any] = {}
    models = {}
    for task, d in model_dirs.items():
        key = str(Path(d).resolve())
        if key not in loaded:
            loaded[key] = MultiTaskModel.from_pretrained(d).eval()
        models[task] = loaded[key]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for task, x in reqs[:warmup]:
            models[task].predict(task, [x], batch_size=1)
        ms = []
        for task, x in reqs:
            t0 = time.perf_counter()
            models[task].predict(task, [x], batch_size=1)
            ms.append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(before)
    return {"p50_ms": round(statistics.median(ms), 3), "p95_ms": round(percentile(ms, 95), 3),
            "requests": len(ms)}


def conditions(threads: int) -> dict:
    return {"cpu_count": os.cpu_count(), "threads": threads, "loadavg_1m": round(os.getloadavg()[0], 2)}


WARMUP = 5


def probe(specs: Mapping[str, Any], task_params: Mapping[str, Any], split: str, n: int, threads: int):
    """(measure for a row's {task: model dir}, the conditions to report) for n requests drawn from
    each task's scored `split` records (`requests`); (None, None) when n is 0."""
    if n < 1:
        return None, None
    from bertops.data.tasks import load_records, record_input

    inputs = {t: [record_input(spec, r) for r in load_records(task_params[t], split, t)[:n]]
              for t, spec in specs.items()}
    reqs = requests(inputs, n)
    cond = {**conditions(threads), "requests": len(reqs), "warmup": WARMUP}
    return (lambda dirs: measure(dirs, reqs, WARMUP, threads)), cond
