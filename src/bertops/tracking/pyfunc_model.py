"""MLflow "model from code" for the fine-tuned multi-task model.

Logged with `mlflow.pyfunc.log_model(python_model=<this file>, code_paths=[multitask.py])`, so the
registered model holds source code and safetensors weights, never a pickle, and loads without
bertops installed: `mlflow.pyfunc.load_model("models:/bertops@champion")`.

Input: a DataFrame with columns `task` and `text`, plus `text_pair` (second sentence for pair
tasks, the context for QA, where `text` is the question). For token classification `text` is the
sentence; it is split on whitespace into words. Output: a DataFrame with one row per input:
`task`, `prediction` (label, space-joined BIO tags, or answer text) and `score`.
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd

try:  # inside the project
    from bertops.model.multitask import MultiTaskModel
except ImportError:  # inside a logged model: code_paths puts multitask.py on sys.path
    from multitask import MultiTaskModel


class MultiTaskPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.model = MultiTaskModel.from_pretrained(context.artifacts["model_dir"])
        self.model.eval()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = []
        for rec in model_input.to_dict(orient="records"):
            task = rec["task"]
            pair = rec.get("text_pair")
            pair = None if pair is None or (isinstance(pair, float) and pair != pair) else pair
            out = self.model.predict_one(task, rec["text"], pair)
            rows.append({"task": task, "prediction": out["prediction"], "score": float(out["score"]),
                         "detail": json.dumps(out, default=str)})
        return pd.DataFrame(rows, columns=["task", "prediction", "score", "detail"])


mlflow.models.set_model(MultiTaskPyfunc())
