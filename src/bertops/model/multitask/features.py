"""Inputs to features and records to inputs, for any task type (dispatch to the registry).

Pure Python over a fast tokenizer (no torch): training, evaluation and serving share these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .spec import TaskSpec
from .task_types import get_task_type


def record_input(spec: TaskSpec, rec: dict) -> Any:
    """The model input of a record, in the form `MultiTaskModel.predict` takes."""
    return get_task_type(spec.type).record_input(spec, rec)


def gold_label(spec: TaskSpec, rec: dict) -> Any:
    """Gold answer of a record: label string; list of BIO tags; list of acceptable answer texts (QA)."""
    return get_task_type(spec.type).gold_label(spec, rec)


def normalize_input(spec: TaskSpec, x: Any) -> Any:
    """Accept a record (dict with the task's fields) or the plain form; return the plain form."""
    if isinstance(x, dict):
        return record_input(spec, x)
    return get_task_type(spec.type).normalize_input(spec, x)


def encode(tokenizer, spec: TaskSpec, inputs: Sequence[Any], golds: Sequence[Any] | None = None) -> list[dict]:
    """Features for plain inputs (see `normalize_input`), with training targets when golds are given.

    For QA, golds are SQuAD `answers` dicts ({"text": [...], "answer_start": [...]}).
    """
    return get_task_type(spec.type).encode(tokenizer, spec, inputs, golds)


def encode_records(tokenizer, spec: TaskSpec, records: Sequence[dict], with_labels: bool = True) -> list[dict]:
    """Features for records, with training targets (`TaskType.training_target`) by default."""
    task_type = get_task_type(spec.type)
    inputs = [task_type.record_input(spec, r) for r in records]
    golds = [task_type.training_target(spec, r) for r in records] if with_labels else None
    return task_type.encode(tokenizer, spec, inputs, golds)
