"""One shared BERT encoder, one small head per task (MT-DNN style), saved without pickle.

    model = MultiTaskModel.from_pretrained("artifacts/finetune/model")
    model.predict("sentiment", ["a gorgeous, witty film"])
    # [{"label": "fresh", "score": 0.93, "scores": {"rotten": 0.07, "fresh": 0.93}}]
    model.predict("define-qa", [("Which word means: ...?", "context ...")])
    # [{"answer": "...", "score": 0.62, "logit_score": 7.1, "start": 12, "end": 18}]

This package is self-contained (standard library + torch; transformers and safetensors imported
when loading; seqeval when token metrics are computed): the MLflow pyfunc ships this directory
alone as `code_paths` (importable there as `multitask`), so it imports nothing else of bertops
(only bertops.errors when it is there) and uses relative imports. Training, evaluation and data
validation reuse it (via bertops.data.tasks).

- spec.py: `TaskSpec`, what a saved model knows about each task;
- task_types/: one module per kind of task (features, head, loss, decoding, metric, baseline,
  record rules) and the registry `TASK_TYPES` / `get_task_type`;
- features.py: records -> inputs -> features, dispatched on the task type;
- model.py: the encoder + heads `MultiTaskModel`, `collate`;
- layout.py: which model dir serves a task (one multi-task model, or single_task's per-task models);
- serving.py: `predict_rows`, a request of rows of mixed tasks predicted in batches (MLflow pyfunc),
  after `check_rows` refuses a malformed request (RequestError naming row, column and rule).

The model part imports torch; it is loaded on first use of its names, so importing the spec
and the registry (as bertops.config does) stays cheap.
"""

from __future__ import annotations

from .features import encode, encode_records, gold_label, normalize_input, record_input
from .layout import SINGLE_TASK_MANIFEST, single_task_dirs, task_model_dir
from .serving import (
    DEFAULT_BATCH_SIZE,
    MAX_REQUEST_CHARS,
    MAX_ROWS_PER_REQUEST,
    MAX_TEXT_CHARS,
    RequestError,
    check_rows,
    predict_rows,
)
from .spec import IGNORE_INDEX, TaskSpec, label_str
from .task_types import TASK_TYPES, TaskType, get_task_type, register_task_type

_MODEL_NAMES = ("CONFIG_NAME", "FEATURE_LAYERS", "FORMAT_VERSION", "HEADS_NAME", "LayerCombiner",
                "MultiTaskModel", "Pooler", "collate")


def __getattr__(name: str):
    if name in _MODEL_NAMES:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_BATCH_SIZE", "IGNORE_INDEX", "MAX_REQUEST_CHARS", "MAX_ROWS_PER_REQUEST", "MAX_TEXT_CHARS",
           "SINGLE_TASK_MANIFEST", "TASK_TYPES", "RequestError", "TaskSpec", "TaskType", "check_rows", "encode",
           "encode_records",
           "get_task_type", "gold_label", "label_str", "normalize_input", "predict_rows", "record_input",
           "register_task_type", "single_task_dirs", "task_model_dir", *_MODEL_NAMES]
