"""The MLflow model as `register` logs it (model from code, `code_paths` = the multitask package
directory), saved with MLflow and loaded by MLflow in a process where bertops cannot be imported:
it must answer for every task type exactly as the model does in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bertops.config import TaskParams
from bertops.data.tasks import TaskSpec
from bertops.model.multitask import MultiTaskModel
from tests.helpers import write_tiny_encoder

TASKS = {  # "sentiment": the name register's input example uses
    "sentiment": TaskParams(type="sequence_classification", path="x", text_fields=["text"], labels=["neg", "pos"]),
    "wic": TaskParams(type="pair_classification", path="x", text_fields=["a", "b"], labels=[False, True]),
    "ner": TaskParams(type="token_classification", path="x", labels=["class"]),
    "qa": TaskParams(type="extractive_qa", path="x", max_seq_length=32, doc_stride=8),
}
ROWS = [
    {"task": "sentiment", "text": "A warm, funny and clever film.", "text_pair": None},
    {"task": "wic", "text": "the cat sat", "text_pair": "a cat sat"},
    {"task": "ner", "text": "use QuerySet here", "text_pair": None},
    {"task": "qa", "text": "who did?", "text_pair": "Ann did it, on a Tuesday, with a hammer."},
]


@pytest.mark.slow
def test_saved_mlflow_model_serves_every_task_type_without_bertops(tmp_path):
    pytest.importorskip("mlflow")
    import mlflow

    from bertops.stages.register import multitask_model_kwargs

    encoder = write_tiny_encoder(tmp_path / "encoder", max_position_embeddings=64)
    model = MultiTaskModel.build(encoder, [TaskSpec.from_params(n, tp) for n, tp in TASKS.items()])
    model.save_pretrained(tmp_path / "model")
    expected = [model.predict_one(r["task"], r["text"], r["text_pair"]) for r in ROWS]

    mlflow.pyfunc.save_model(path=str(tmp_path / "mlmodel"), **multitask_model_kwargs(tmp_path / "model"))
    code = sorted(p.relative_to(tmp_path / "mlmodel" / "code").as_posix()
                  for p in (tmp_path / "mlmodel" / "code").rglob("*.py"))
    assert "multitask/task_types/span.py" in code and not [p for p in code if not p.startswith("multitask/")]

    script = f"""
import json, sys
import pandas as pd
sys.modules["bertops"] = None  # the served model must not need bertops
import mlflow
m = mlflow.pyfunc.load_model({str(tmp_path / "mlmodel")!r})
out = m.predict(pd.DataFrame({ROWS!r}))
assert not [k for k, v in sys.modules.items() if k.startswith("bertops") and v is not None]
print(json.dumps(out[["task", "prediction", "score"]].to_dict(orient="records")))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert [(g["task"], g["prediction"]) for g in got] == [(r["task"], e["prediction"]) for r, e in zip(ROWS, expected)]
    assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], abs=1e-5)
