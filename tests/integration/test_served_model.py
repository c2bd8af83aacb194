"""The MLflow model as `register` logs it (model from code, `code_paths` = the multitask package
directory), saved with MLflow and loaded by MLflow in a process where bertops cannot be imported:
it must answer for every task type exactly as the model does in-process one row at a time, while
running the request in batches (one encoder pass per batch of a task's features, not per row).
The same for a finetune.mode adapters model: one base encoder, a LoRA adapter (peft) per task."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bertops.config import TaskParams
from bertops.data.tasks import TaskSpec
from bertops.model.multitask import DEFAULT_BATCH_SIZE, MultiTaskModel
from tests.helpers import write_tiny_encoder
from tests.unit.test_batched_predict import build, expected_passes, mixed_request

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
# then 60 rows of the four tasks interleaved, of varied lengths (QA contexts of several windows)
NAMES = {"sent": "sentiment", "pair": "wic", "ner": "ner", "qa": "qa"}
ROWS += [{"task": NAMES[r["task"]], "text": r["text"],
          "text_pair": r["text_pair"] if isinstance(r["text_pair"], str) else None}
         for r in mixed_request(60, seed=11)]


ADAPTERS = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["query", "value", "dense"]}


def build_served_model(tmp_path, adapters: dict | None = None) -> MultiTaskModel:
    """The four-task test model (seed 2, weights redrawn at sd 0.4 so answers differ between rows),
    saved in tmp_path/"model" as finetune saves it; `adapters`: a LoRA adapter per task (mode adapters)."""
    encoder = write_tiny_encoder(tmp_path / "encoder", max_position_embeddings=64)
    # seed 2: a seed under which every task gives more than one answer
    model = build(encoder, 2, specs=[TaskSpec.from_params(n, tp) for n, tp in TASKS.items()], adapters=adapters)
    model.save_pretrained(tmp_path / "model")
    return model


def save_served_model(tmp_path, adapters: dict | None = None):
    """`build_served_model`, then the MLflow model exactly as register logs it (same kwargs, no
    registry) in tmp_path/"mlmodel". Returns (the in-process model, the MLflow model path)."""
    mlflow = pytest.importorskip("mlflow")
    from bertops.stages.register import multitask_model_kwargs

    model = build_served_model(tmp_path, adapters)
    mlflow.pyfunc.save_model(path=str(tmp_path / "mlmodel"), **multitask_model_kwargs(tmp_path / "model"))
    return model, tmp_path / "mlmodel"


@pytest.mark.slow
@pytest.mark.parametrize("adapters", [None, ADAPTERS], ids=["finetune", "adapters"])
def test_saved_mlflow_model_serves_every_task_type_without_bertops(tmp_path, adapters):
    model, _ = save_served_model(tmp_path, adapters)
    if adapters:  # one shared encoder, each task's adapter on its own
        stored = {p.parent.name for p in (tmp_path / "mlmodel").rglob("adapters/*/adapter_model.safetensors")}
        assert stored == set(TASKS)
    expected = [model.predict_one(r["task"], r["text"], r["text_pair"]) for r in ROWS]  # row by row
    assert all(len({e["prediction"] for e, r in zip(expected, ROWS) if r["task"] == t}) > 1 for t in TASKS)
    passes = expected_passes(model, ROWS, DEFAULT_BATCH_SIZE)
    assert passes < len(ROWS) / 4
    code = sorted(p.relative_to(tmp_path / "mlmodel" / "code").as_posix()
                  for p in (tmp_path / "mlmodel" / "code").rglob("*.py"))
    assert "multitask/task_types/span.py" in code and not [p for p in code if not p.startswith("multitask/")]

    script = f"""
import json, sys
import pandas as pd
sys.modules["bertops"] = None  # the served model must not need bertops
import mlflow
m = mlflow.pyfunc.load_model({str(tmp_path / "mlmodel")!r})
passes = []
for model in {{id(x): x for x in m.unwrap_python_model().models.values()}}.values():
    model.encoder.register_forward_hook(lambda *args: passes.append(1))
out = m.predict(pd.DataFrame({ROWS!r}))
assert not [k for k, v in sys.modules.items() if k.startswith("bertops") and v is not None]
print(json.dumps({{"passes": len(passes), "out": out[["task", "prediction", "score"]].to_dict(orient="records")}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    got = result["out"]
    assert [(g["task"], g["prediction"]) for g in got] == [(r["task"], e["prediction"]) for r, e in zip(ROWS, expected)]
    assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], rel=1e-5, abs=1e-5)
    assert all(0.0 <= g["score"] <= 1.0 for g in got)  # every score a probability, QA's included
    assert result["passes"] == passes  # batched: not len(ROWS) passes
