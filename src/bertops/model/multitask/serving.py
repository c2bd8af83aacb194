"""Batched predictions for a request of rows of mixed tasks: what the MLflow model serves.

A row is {"task", "text", "text_pair"} (see `MultiTaskModel.predict_one` for what the two texts
are per task type). `predict_rows` groups the rows by task, encodes each task's inputs together
and runs them through the encoder in batches of at most `batch_size` features (an extractive QA
example may make several doc_stride windows; its windows are reduced back to one answer), then
returns one flat prediction per row in the request's order. N rows of one task are
ceil(features / batch_size) forward passes, not N.

`check_rows` refuses a malformed request before any forward pass, with a `RequestError` whose
message names the row index, the column and the rule broken: a request of more than
MAX_ROWS_PER_REQUEST rows or MAX_REQUEST_CHARS characters of text in all, a row whose `task` is not
a task of this model, a `text` (or, for pair tasks and QA, a `text_pair`) that is missing, null,
not a string, blank or longer than MAX_TEXT_CHARS characters. The MLflow pyfunc turns a
RequestError into an HTTP 400 (MlflowException INVALID_PARAMETER_VALUE) with that message.

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

# Bounds on one request, so a single call cannot hold the server for minutes or exhaust memory.
# At ~150 rows/s on one CPU thread (MiniLM-size encoder) the row bound is ~7 s of work, well under
# the scoring server's 60 s request timeout; a text of MAX_TEXT_CHARS characters is ~5,000 tokens
# (a QA context of that length is some tens of doc_stride windows).
MAX_ROWS_PER_REQUEST = 1000
MAX_TEXT_CHARS = 20_000
MAX_REQUEST_CHARS = 1_000_000
TEXT_COLUMNS = ("text", "text_pair")


class RequestError(BertopsError):
    """A request the served model refuses: the caller's fault (HTTP 400), not the server's."""


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


def _check_text(i: int, column: str, value: Any, why: str = "") -> int:
    """The length of a row's text column, or a RequestError naming the row, column and rule."""
    if _missing(value):
        raise RequestError(f"row {i}: {column} is missing (null){why}")
    if not isinstance(value, str):
        raise RequestError(f"row {i}: {column} must be a string, got {type(value).__name__} {value!r:.40}")
    if not value.strip():
        raise RequestError(f"row {i}: {column} is blank{why}")
    if len(value) > MAX_TEXT_CHARS:
        raise RequestError(f"row {i}: {column} is {len(value)} characters, more than the limit of "
                           f"{MAX_TEXT_CHARS} (MAX_TEXT_CHARS)")
    return len(value)


def check_rows(models: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a malformed request (see the module docstring) with a RequestError naming the first
    problem: its row index, column and rule. Reads no model weights; runs before any forward pass."""
    if len(rows) > MAX_ROWS_PER_REQUEST:
        raise RequestError(f"request has {len(rows)} rows, more than the limit of {MAX_ROWS_PER_REQUEST} "
                           "(MAX_ROWS_PER_REQUEST); split it into smaller requests")
    total = 0
    for i, row in enumerate(rows):
        task = row.get("task")
        if _missing(task):
            raise RequestError(f"row {i}: task is missing (null); this model serves {sorted(models)}")
        if not isinstance(task, str):
            raise RequestError(f"row {i}: task must be a string, got {type(task).__name__} {task!r:.40}")
        if task not in models:
            raise RequestError(f"row {i}: unknown task {task!r:.80}; this model serves {sorted(models)}")
        spec = models[task].tasks[task]
        pair = get_task_type(spec.type).pair_input
        total += _check_text(i, "text", row.get("text"))
        pair_value = row.get("text_pair")
        if pair:
            why = "; task {!r} ({}) needs text_pair ({})".format(
                task, spec.type, "the context" if spec.type == "extractive_qa" else "the second text")
            total += _check_text(i, "text_pair", pair_value, why)
        elif not _missing(pair_value) and not isinstance(pair_value, str):
            raise RequestError(f"row {i}: text_pair must be a string or null, got {type(pair_value).__name__}")
        if total > MAX_REQUEST_CHARS:
            raise RequestError(f"request has more than {MAX_REQUEST_CHARS} characters of text (MAX_REQUEST_CHARS) "
                               f"by row {i}; split it into smaller requests")


def predict_rows(models: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                 batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict]:
    """One flat prediction per row (the `TaskType.flat` form: the `predict` dict plus
    "prediction" and "score"), in row order.

    models: {task: the MultiTaskModel that serves it} (one model for every task, or one per task
    in finetune.mode single_task). Every row is checked (`check_rows`) before any forward pass;
    a RequestError names the row's index in the request.
    """
    if batch_size < 1:
        raise BertopsError(f"batch_size must be at least 1, got {batch_size}")
    check_rows(models, rows)
    groups: dict[str, tuple[list[int], list[Any]]] = {}
    for i, row in enumerate(rows):
        task = row["task"]
        model = models[task]
        try:
            x = row_input(model, task, row.get("text"), row.get("text_pair"))
            x = get_task_type(model.tasks[task].type).normalize_input(model.tasks[task], x)
        except BertopsError as e:
            raise RequestError(f"row {i}: {e}") from None
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
