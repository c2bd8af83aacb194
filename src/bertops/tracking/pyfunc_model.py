"""MLflow "model from code" for the fine-tuned multi-task model.

Logged with `mlflow.pyfunc.log_model(python_model=<this file>, code_paths=[<the multitask package
directory>])` (bertops.stages.register.multitask_model_kwargs), so the
registered model holds source code and safetensors weights, never a pickle, and loads without
bertops installed: `mlflow.pyfunc.load_model("models:/bertops@champion")`.

Input: a DataFrame with columns `task` and `text`, plus `text_pair` (second sentence for pair
tasks, the context for QA, where `text` is the question). For token classification `text` is the
sentence; it is split on whitespace into words. Output: a DataFrame with one row per input, in
input order: `task`, `prediction` (label, space-joined BIO tags, or answer text) and `score`.
Rows are predicted in batches (multitask.serving.predict_rows), not one forward pass per row.

The model dir is one multi-task model, or (finetune.mode single_task) one model per task under
it with a manifest naming each task's sub-directory: each row goes to its task's model.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd

try:  # inside the project
    from bertops.model.multitask import DEFAULT_BATCH_SIZE, MultiTaskModel, predict_rows
except ImportError:  # inside a logged model: code_paths puts the multitask package on sys.path
    from multitask import DEFAULT_BATCH_SIZE, MultiTaskModel, predict_rows


# written by bertops.train.finetune in single_task mode: {"models": {task: sub-directory}}
SINGLE_TASK_MANIFEST = "single_task.json"


def load_models(model_dir) -> dict:
    """{task: the MultiTaskModel that serves it} for either layout of a fine-tuned model dir."""
    root = Path(model_dir)
    manifest = root / SINGLE_TASK_MANIFEST
    if manifest.exists():
        subdirs = json.loads(manifest.read_text(encoding="utf-8"))["models"]
        return {task: MultiTaskModel.from_pretrained(root / sub).eval() for task, sub in subdirs.items()}
    model = MultiTaskModel.from_pretrained(root).eval()
    return {task: model for task in model.tasks}


class MultiTaskPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.models = load_models(context.artifacts["model_dir"])

    def _model(self, task: str):
        if task not in self.models:
            raise ValueError(f"unknown task {task!r}; this model serves {sorted(self.models)}")
        return self.models[task]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # batched: rows grouped by task, DEFAULT_BATCH_SIZE features per forward pass, row order kept
        records = model_input.to_dict(orient="records")
        for rec in records:
            self._model(rec.get("task"))  # an unknown task is refused before any forward pass
        outs = predict_rows(self.models, records, DEFAULT_BATCH_SIZE)
        rows = [{"task": rec["task"], "prediction": out["prediction"], "score": float(out["score"]),
                 "detail": json.dumps(out, default=str)} for rec, out in zip(records, outs)]
        return pd.DataFrame(rows, columns=["task", "prediction", "score", "detail"])


mlflow.models.set_model(MultiTaskPyfunc())
