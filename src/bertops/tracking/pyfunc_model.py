"""MLflow "model from code" for the fine-tuned multi-task model.

Logged with `mlflow.pyfunc.log_model(python_model=<this file>, code_paths=[multitask.py])`, so the
registered model holds source code and safetensors weights, never a pickle, and loads without
bertops installed: `mlflow.pyfunc.load_model("models:/bertops@champion")`.

Input: a DataFrame with columns `task` and `text`, plus `text_pair` (second sentence for pair
tasks, the context for QA, where `text` is the question). For token classification `text` is the
sentence; it is split on whitespace into words. Output: a DataFrame with one row per input:
`task`, `prediction` (label, space-joined BIO tags, or answer text) and `score`.

The model dir is one multi-task model, or (finetune.mode single_task) one model per task under
it with a manifest naming each task's sub-directory: each row goes to its task's model.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd

try:  # inside the project
    from bertops.model.multitask import MultiTaskModel
except ImportError:  # inside a logged model: code_paths puts multitask.py on sys.path
    from multitask import MultiTaskModel


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
        rows = []
        for rec in model_input.to_dict(orient="records"):
            task = rec["task"]
            pair = rec.get("text_pair")
            pair = None if pair is None or (isinstance(pair, float) and pair != pair) else pair
            out = self._model(task).predict_one(task, rec["text"], pair)
            rows.append({"task": task, "prediction": out["prediction"], "score": float(out["score"]),
                         "detail": json.dumps(out, default=str)})
        return pd.DataFrame(rows, columns=["task", "prediction", "score", "detail"])


mlflow.models.set_model(MultiTaskPyfunc())
