"""The served model over HTTP (`bertops serve`'s command: `mlflow models serve --env-manager local`) on
loopback, with the model saved exactly as register logs it (test_served_model.save_served_model).

Every malformed request gets a 4xx whose message names the problem (row index, column, rule) and
whose body holds no stack trace or server path; the server keeps answering; 1,000 requests at
concurrency 8, with malformed ones mixed in, each get the right status and the right answer.
One server for the module, started and stopped here.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from bertops.model.multitask import MAX_REQUEST_CHARS, MAX_ROWS_PER_REQUEST, MAX_TEXT_CHARS
from tests.integration.test_served_model import save_served_model

pytestmark = pytest.mark.slow

COLUMNS = ["task", "text", "text_pair"]
GOOD = [  # one row per request in the load check; every task type
    ["sentiment", "A warm, funny and clever film.", None],
    ["sentiment", "dull", None],
    ["wic", "the cat sat", "a cat sat"],
    ["wic", "bank of the river", "the bank closed"],
    ["ner", "use QuerySet here", None],
    ["ner", "call save on the Model instance", None],
    ["qa", "who did?", "Ann did it, on a Tuesday, with a hammer."],
    ["qa", "when?", "It happened on a Tuesday in the spring, or so they say, near the old mill by the river."],
]
# (name, request body, substrings the error message must hold: what, where, which rule)
MALFORMED = [
    ("unknown task", {"dataframe_split": {"columns": COLUMNS, "data": [GOOD[0], ["nope", "x", None]]}},
     ["row 1", "unknown task 'nope'", "sentiment"]),
    ("task not a string", {"dataframe_split": {"columns": COLUMNS, "data": [[3, "x", None]]}},
     ["row 0", "task must be a string", "int"]),
    ("null task", {"dataframe_split": {"columns": COLUMNS, "data": [GOOD[0], [None, "x", None]]}},
     ["row 1", "task"]),
    ("no task column", {"dataframe_split": {"columns": ["text"], "data": [["x"]]}},
     ["missing inputs", "'task'"]),
    ("no text column", {"dataframe_split": {"columns": ["task", "text_pair"], "data": [["sentiment", None]]}},
     ["missing inputs", "'text'"]),
    ("no text field (records)", {"dataframe_records": [{"task": "sentiment", "text": "ok"}, {"task": "sentiment"}]},
     ["row 1", "text is missing"]),
    ("null text", {"dataframe_split": {"columns": COLUMNS, "data": [GOOD[0], ["sentiment", None, None]]}},
     ["row 1", "text is missing (null)"]),
    ("blank text", {"dataframe_split": {"columns": COLUMNS, "data": [["ner", "   ", None]]}},
     ["row 0", "text is blank"]),
    ("null text_pair, pair task", {"dataframe_split": {"columns": COLUMNS, "data": [GOOD[0], ["wic", "a", None]]}},
     ["row 1", "text_pair is missing (null)", "'wic' (pair_classification) needs text_pair"]),
    ("no text_pair column, QA", {"dataframe_split": {"columns": ["task", "text"], "data": [["qa", "who?"]]}},
     ["row 0", "text_pair is missing", "'qa' (extractive_qa) needs text_pair (the context)"]),
    ("number as text", {"dataframe_split": {"columns": COLUMNS, "data": [GOOD[0], ["sentiment", 5, None]]}},
     ["row 1", "text must be a string", "int"]),
    ("all-number text column", {"dataframe_split": {"columns": COLUMNS, "data": [["sentiment", 5.5, None]]}},
     ["row 0", "text must be a string", "float"]),
    ("list as text", {"dataframe_split": {"columns": COLUMNS, "data": [["ner", ["use", "it"], None]]}},
     ["row 0", "text must be a string", "list"]),
    ("number as text_pair", {"dataframe_split": {"columns": COLUMNS, "data": [["qa", "who?", 7]]}},
     ["row 0", "text_pair must be a string", "int"]),
    ("text over MAX_TEXT_CHARS", {"dataframe_split": {"columns": COLUMNS, "data": [
        GOOD[0], ["qa", "who?", "x" * (MAX_TEXT_CHARS + 1)]]}},
     ["row 1", "text_pair", f"{MAX_TEXT_CHARS + 1} characters", "MAX_TEXT_CHARS"]),
    ("rows over MAX_ROWS_PER_REQUEST", {"dataframe_split": {"columns": COLUMNS,
                                                            "data": [GOOD[1]] * (MAX_ROWS_PER_REQUEST + 1)}},
     [f"{MAX_ROWS_PER_REQUEST + 1} rows", "MAX_ROWS_PER_REQUEST"]),
    ("characters over MAX_REQUEST_CHARS", {"dataframe_split": {"columns": COLUMNS, "data": [
        ["sentiment", "y" * MAX_TEXT_CHARS, None]] * (MAX_REQUEST_CHARS // MAX_TEXT_CHARS + 1)}},
     ["MAX_REQUEST_CHARS", f"row {MAX_REQUEST_CHARS // MAX_TEXT_CHARS}"]),
    ("not JSON", b"{not json", ["valid JSON"]),
    ("CSV pandas cannot parse", ("text/csv", b'task,text\n"unterminated,x\n'), ["Failed to parse input", "CSV"]),
    ("CSV without text", ("text/csv", b"task,text\nsentiment\n"), ["row 0", "text is missing"]),
    ("Parquet that is not Parquet", ("application/vnd.apache.parquet", b"garbage"), ["Failed to parse input"]),
    ("no dataframe key", {"rows": [GOOD[0]]}, ["dataframe_split"]),
]
LEAKS = re.compile(r'Traceback|stack_trace|File "|site-packages|/work/|/tmp/|\w\.py\b')  # a trace, a server path


def _leaks(text: str) -> list[str]:
    return LEAKS.findall(text)


def _post(url: str, body, timeout: float = 60) -> tuple[int, str]:
    """body: a JSON value, raw JSON bytes, or (content type, raw bytes)."""
    ctype, data = body if isinstance(body, tuple) else ("application/json", body)
    data = data if isinstance(data, bytes) else json.dumps(data).encode()
    req = urllib.request.Request(url + "/invocations", data=data, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base url, the in-process model) for `bertops serve`'s command on the saved model."""
    from bertops.cli import scoring_server
    from bertops.errors import BertopsError

    tmp = tmp_path_factory.mktemp("serve")
    model, mlmodel = save_served_model(tmp)
    env = {"MLFLOW_TRACKING_URI": (tmp / "mlruns").as_uri()}  # nothing written to the project
    with open(tmp / "server.log", "w") as log:
        try:
            with scoring_server(str(mlmodel), env=env, log=log, timeout=120) as (url, proc):
                yield url, model, proc, mlmodel
        except BertopsError as e:
            pytest.fail(f"{e}\n{(tmp / 'server.log').read_text()[-3000:]}")


def _expected(model, row) -> tuple[str, float]:
    pred = model.predict_one(*row)
    return pred["prediction"], pred["score"]


def test_malformed_requests_get_a_400_naming_the_problem(server):
    url, model, proc, _ = server
    for name, body, needles in MALFORMED:
        status, text = _post(url, body)
        assert status == 400, (name, status, text[:2000])
        message = json.loads(text)["message"]
        for needle in needles:
            assert needle in message, (name, needle, message[-1000:])
        assert not _leaks(text), (name, _leaks(text), text[:3000])
        assert proc.poll() is None, name
    # and it still answers, every task type, scores in [0, 1] (a QA score is a probability)
    status, text = _post(url, {"dataframe_split": {"columns": COLUMNS, "data": GOOD}})
    assert status == 200, text[:2000]
    got = json.loads(text)["predictions"]
    assert [g["prediction"] for g in got] == [_expected(model, row)[0] for row in GOOD]
    assert all(0.0 <= g["score"] <= 1.0 for g in got)
    assert [g["score"] for g in got] == pytest.approx([_expected(model, row)[1] for row in GOOD], rel=1e-5, abs=1e-5)


def test_load_1000_requests_at_concurrency_8(server):
    """1,000 requests from 8 threads; every 10th is malformed (400), the others must get their own
    row's answer (200): no errors, no mixed-up answers, the server alive at the end."""
    url, model, proc, _ = server
    expected = [_expected(model, row)[0] for row in GOOD]
    bad = [m for m in MALFORMED if m[0] in ("unknown task", "null text", "null text_pair, pair task", "number as text")]

    def one(i: int) -> tuple[int, int, str]:
        if i % 10 == 9:
            status, text = _post(url, bad[i % len(bad)][1])
            return i, status, text
        status, text = _post(url, {"dataframe_split": {"columns": COLUMNS, "data": [GOOD[i % len(GOOD)]]}})
        return i, status, text

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(1000)))
    elapsed = time.monotonic() - start
    wrong = []
    for i, status, text in results:
        if i % 10 == 9:
            if status != 400 or _leaks(text):
                wrong.append((i, status, text[:300]))
        elif status != 200 or json.loads(text)["predictions"][0]["prediction"] != expected[i % len(GOOD)]:
            wrong.append((i, status, text[:300]))
    assert not wrong, (len(wrong), wrong[:5])
    assert proc.poll() is None
    print(f"1000 requests at concurrency 8 in {elapsed:.1f} s")


def test_a_server_fault_is_a_500_without_trace_or_paths(server, monkeypatch):
    """A failure that is not the request's fault (here: predict_rows raising with a path in its
    message) is logged by the server and answered 500 with a short message, no trace, no path."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    loaded = mlflow.pyfunc.load_model(str(server[3]))
    python_model = loaded.unwrap_python_model()

    def boom(*args, **kwargs):
        raise RuntimeError("cannot open /work/secret/weights.py")

    monkeypatch.setattr(sys.modules[type(python_model).__module__], "predict_rows", boom)  # the served code's module
    with pytest.raises(MlflowException) as err:
        loaded.predict(pd.DataFrame([GOOD[0]], columns=COLUMNS))
    assert err.value.get_http_status_code() == 500
    body = err.value.serialize_as_json()
    assert "internal error while predicting (RuntimeError)" in body and not _leaks(body), body


def test_bench_serving_prints_the_table(server, capsys):
    """bench/serving.py, bounded to a few requests, on the saved model: one row per path with
    latency, throughput and size (it starts and stops its own server)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "serving.py"
    spec = importlib.util.spec_from_file_location("bench_serving", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    import torch

    env, threads = dict(os.environ), torch.get_num_threads()  # main sets both for its process: restore
    os.environ["MLFLOW_TRACKING_URI"] = (server[3].parent / "mlruns").as_uri()
    try:
        assert bench.main(["--model", f"tiny={server[3]}", "--requests", "5", "--batch", "4", "--batches", "2",
                           "--warmup", "1"]) == 0
    finally:
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(threads)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny |")]
    assert [line.split("|")[2].strip() for line in lines] == ["pyfunc", "http"]
    for line in lines:
        p50, p95, rate, size = (float(x) for x in line.split("|")[3:7])
        assert 0 < p50 <= p95 and rate > 0
        # the MLflow model directory's size, as printed (MB, one decimal)
        assert size == round(sum(p.stat().st_size for p in server[3].rglob("*") if p.is_file()) / 1e6, 1) > 0
