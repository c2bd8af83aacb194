"""Batched predictions for a request of rows of mixed tasks: what the MLflow model serves.

A row is {"task", "text", "text_pair"} (see `MultiTaskModel.predict_one` for what the two texts
are per task type). `predict_rows` groups the rows by task, encodes each task's inputs together
and runs them through the encoder in batches of at most `batch_size` features (an extractive QA
example may make several doc_stride windows; its windows are reduced back to one answer), then
returns one flat prediction per row in the request's order. N rows of one task are
ceil(features / batch_size) forward passes, not N.

Standard library only at import time (the model's methods import torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .spec import BertopsError
from .task_types import get_task_type

# Features per forward pass when serving: bounds memory (a QA batch is batch_size x max_seq_length
# tokens) while amortising the per-pass overhead.
DEFAULT_BATCH_SIZE = 32


def _missing(value: Any) -> bool:
    """None, or a float NaN (pandas' missing value in an object column)."""
    return value is None or (isinstance(value, float) and value != value)


def row_input(model, task: str, text: Any, text_pair: Any = None) -> Any:
    """A row's two text columns as the plain input `model.predict(task, ...)` takes."""
    spec = model.tasks.get(task)
    if spec is None:
        raise BertopsError(f"unknown task {task!r}; this model has {sorted(model.tasks)}")
    task_type = get_task_type(spec.type)
    if not task_type.pair_input:
        return text
    if _missing(text_pair):
        raise BertopsError(f"task {task!r} ({spec.type}) needs text_pair")
    return (text, text_pair)


def predict_rows(models: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                 batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict]:
    """One flat prediction per row (the `TaskType.flat` form: the `predict` dict plus
    "prediction" and "score"), in row order.

    models: {task: the MultiTaskModel that serves it} (one model for every task, or one per task
    in finetune.mode single_task). Every row is checked before any forward pass; an error names
    the row's index in the request.
    """
    if batch_size < 1:
        raise BertopsError(f"batch_size must be at least 1, got {batch_size}")
    groups: dict[str, tuple[list[int], list[Any]]] = {}
    for i, row in enumerate(rows):
        task = row.get("task")
        if task not in models:
            raise BertopsError(f"row {i}: unknown task {task!r}; this model serves {sorted(models)}")
        model = models[task]
        try:
            x = row_input(model, task, row.get("text"), row.get("text_pair"))
            x = get_task_type(model.tasks[task].type).normalize_input(model.tasks[task], x)
        except BertopsError as e:
            raise BertopsError(f"row {i}: {e}") from None
        index, inputs = groups.setdefault(task, ([], []))
        index.append(i)
        inputs.append(x)
    out: list[dict | None] = [None] * len(rows)
    for task, (index, inputs) in groups.items():
        model = models[task]
        flat = get_task_type(model.tasks[task].type).flat
        for i, pred in zip(index, model.predict(task, inputs, batch_size=batch_size), strict=True):
            out[i] = flat(pred)
    return out  # type: ignore[return-value]
