"""Downstream task data: load and check a split's records; feature building and decoding.

A task is data (params.yaml `tasks:`): everything is driven by a `TaskSpec` built from its
`TaskParams`, so a new task of a known type needs no code, and a new kind of task is one module
of bertops.model.multitask.task_types. Feature building and decoding live in
bertops.model.multitask, which must stay self-contained for serving; they are re-exported here
for the training and evaluate code.

Records: `<path>/<split>.jsonl`, checked on load (`TaskType.check_record`): a record that breaks
a rule raises DataError naming the file, the record and the rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bertops.errors import DataError
from bertops.model.multitask import (  # re-exported: see __all__
    IGNORE_INDEX,
    TaskSpec,
    encode,
    encode_records,
    get_task_type,
    gold_label,
    label_str,
    normalize_input,
    record_input,
)
from bertops.model.multitask.task_types.span import best_span, postprocess_qa
from bertops.model.multitask.task_types.token import bio_tags, word_tags

if TYPE_CHECKING:
    from bertops.config import TaskParams

__all__ = [
    "IGNORE_INDEX", "TaskSpec", "best_span", "bio_tags", "encode", "encode_records", "get_task_type",
    "gold_label", "label_str", "load_records", "normalize_input", "postprocess_qa", "record_input", "word_tags",
]


def load_records(tp: TaskParams, split: str, name: str = "task") -> list[dict]:
    """Records of one split: `<path>/<split>.jsonl`, each checked by its task type."""
    from bertops.io import read_jsonl

    file = Path(tp.path) / f"{split}.jsonl"
    if not file.exists():
        raise DataError(file, None, "task split file exists",
                        f"task {name!r} has no {split} split (run `bertops data fetch`?)")
    records = list(read_jsonl(file))
    spec = TaskSpec.from_params(name, tp)
    task_type = get_task_type(spec.type)
    for i, rec in enumerate(records):
        broken = task_type.check_record(spec, rec)
        if broken is not None:
            raise DataError(str(file), rec.get("id", i), *broken)
    return records
