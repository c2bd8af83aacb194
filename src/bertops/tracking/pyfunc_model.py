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
Every QA score is the answer span's probability, so each score is in [0, 1].

A malformed request (unknown task, missing/null/blank/non-string text, a pair task or QA row
without text_pair, more rows or characters than multitask.serving's MAX_* limits) is refused
before any forward pass with an MlflowException INVALID_PARAMETER_VALUE, which the scoring
server (`mlflow models serve`, `bertops serve`) answers with HTTP 400 and a JSON body
{"error_code", "message"} naming the row, the column and the rule. Any other failure is logged
here with its traceback and answered 500 with a short message, no stack trace or server paths.
A CSV or Parquet body that pandas cannot parse is refused by the scoring server itself, before
this model runs, with a 400 whose body carries a `stack_trace` (server file paths);
`_quiet_scoring_server_errors` turns that off in the serving process.

The model dir is one multi-task model, or (finetune.mode single_task) one model per task under
it with a manifest naming each task's sub-directory: each row goes to its task's model.
"""

from __future__ import annotations

import functools
import json
import logging
import sys

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

try:  # inside the project
    from bertops.model.multitask import DEFAULT_BATCH_SIZE, MultiTaskModel, RequestError, predict_rows, single_task_dirs
except ImportError:  # inside a logged model: code_paths puts the multitask package on sys.path
    from multitask import DEFAULT_BATCH_SIZE, MultiTaskModel, RequestError, predict_rows, single_task_dirs

_log = logging.getLogger(__name__)


def load_models(model_dir) -> dict:
    """{task: the MultiTaskModel that serves it} for either layout of a fine-tuned model dir
    (multitask.layout; single_task mode names its per-task models in SINGLE_TASK_MANIFEST)."""
    dirs = single_task_dirs(model_dir)
    if dirs is not None:
        return {task: MultiTaskModel.from_pretrained(d).eval() for task, d in dirs.items()}
    model = MultiTaskModel.from_pretrained(model_dir).eval()
    return {task: model for task in model.tasks}


def _quiet_scoring_server_errors() -> None:
    """In the scoring server's process (`mlflow models serve` imports it before it loads the model),
    make its own input-parsing errors (unparseable CSV/Parquet) leave the traceback out of the
    response body: the client gets the message, not server file paths. MLflow 3's
    `_handle_serving_error(message, code, include_traceback=True)` is the one place that adds it;
    if a later MLflow lacks it, nothing is changed (tests/integration/test_serving_robustness.py
    sends such a body and fails if a trace comes back)."""
    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    handler = getattr(server, "_handle_serving_error", None)
    if handler is None or getattr(handler, "_bertops_quiet", False):
        return
    quiet = functools.partial(handler, include_traceback=False)
    quiet._bertops_quiet = True  # type: ignore[attr-defined]
    server._handle_serving_error = quiet


class MultiTaskPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.models = load_models(context.artifacts["model_dir"])
        _quiet_scoring_server_errors()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # batched: rows grouped by task, DEFAULT_BATCH_SIZE features per forward pass, row order kept;
        # predict_rows checks every row first (multitask.serving.check_rows)
        if not isinstance(model_input, pd.DataFrame):
            raise MlflowException(f"input must be a table of rows (task, text, text_pair), got "
                                  f"{type(model_input).__name__}", error_code=INVALID_PARAMETER_VALUE)
        missing = [c for c in ("task", "text") if c not in model_input.columns]
        if missing:
            raise MlflowException(f"input has no column {missing[0]!r}; every row needs task and text "
                                  f"(and text_pair for pair tasks and QA)", error_code=INVALID_PARAMETER_VALUE)
        records = model_input.to_dict(orient="records")
        try:
            outs = predict_rows(self.models, records, DEFAULT_BATCH_SIZE)
        except RequestError as e:  # the caller's fault: HTTP 400, the message names row, column, rule
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
        except Exception as e:  # the server's fault: log the traceback here, answer 500 without it
            _log.exception("bertops model: prediction failed")
            raise MlflowException(f"internal error while predicting ({type(e).__name__}); see the server log",
                                  error_code=INTERNAL_ERROR) from None
        rows = [{"task": rec["task"], "prediction": out["prediction"], "score": float(out["score"]),
                 "detail": json.dumps(out, default=str)} for rec, out in zip(records, outs)]
        return pd.DataFrame(rows, columns=["task", "prediction", "score", "detail"])


mlflow.models.set_model(MultiTaskPyfunc())
