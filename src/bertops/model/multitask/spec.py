"""`TaskSpec`: what a saved model must know about a task to encode inputs and decode outputs.

Standard library only (no torch): params loading and data validation use it too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

try:
    from bertops.errors import BertopsError
except ImportError:  # inside an MLflow model, where this package travels alone
    BertopsError = ValueError  # type: ignore[misc,assignment]

IGNORE_INDEX = -100  # torch CrossEntropyLoss default ignore_index


def label_str(value: Any) -> str:
    """Label values as strings; JSON booleans stay JSON-spelled ("true"/"false")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class TaskSpec:
    """A task as saved with the model (JSON-able); `type` names its entry in the task-type registry."""

    name: str
    type: str
    labels: list[str] = field(default_factory=list)  # classes, or BIO tags for token tasks
    max_seq_length: int = 128
    doc_stride: int = 64
    max_answer_length: int = 30
    text_fields: list[str] = field(default_factory=list)
    tokens_field: str = "tokens"
    label_field: str = "label"
    metric: str = "accuracy"
    loss_weight: float = 1.0

    @property
    def task_type(self):
        """This task's `TaskType` (bertops.model.multitask.task_types)."""
        from .task_types import get_task_type

        return get_task_type(self.type)

    @classmethod
    def from_params(cls, name: str, tp) -> TaskSpec:
        """From a bertops.config.TaskParams."""
        from .task_types import get_task_type

        labels = get_task_type(tp.type).spec_labels(tp.labels)
        if len(set(labels)) != len(labels):
            raise BertopsError(f"task {name!r}: labels are not unique: {labels}")
        return cls(name=name, type=tp.type, labels=labels, max_seq_length=tp.max_seq_length,
                   doc_stride=tp.doc_stride, max_answer_length=tp.max_answer_length,
                   text_fields=list(tp.text_fields), tokens_field=tp.tokens_field,
                   label_field=tp.label_field, metric=tp.metric, loss_weight=tp.loss_weight)

    @property
    def num_labels(self) -> int:
        return self.task_type.num_labels(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
