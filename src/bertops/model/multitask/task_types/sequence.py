"""sequence_classification: one text -> one label. Features: [CLS] text [SEP], truncated to
max_seq_length; the head reads the pooled [CLS] vector. Params: one `text_fields` entry, `labels`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._base import BertopsError, TaskSpec
from ._classification import ClassificationType


class SequenceClassification(ClassificationType):
    name = "sequence_classification"
    n_text_fields = 1

    def record_input(self, spec: TaskSpec, rec: dict) -> Any:
        return rec[spec.text_fields[0]]

    def normalize_input(self, spec: TaskSpec, x: Any) -> Any:
        if not isinstance(x, str):
            raise BertopsError(f"task {spec.name!r} takes a text, got {type(x).__name__}")
        return x

    def encode(self, tokenizer, spec: TaskSpec, inputs: Sequence[Any],
               golds: Sequence[str] | None = None) -> list[dict]:
        enc = tokenizer(list(inputs), truncation=True, max_length=spec.max_seq_length)
        return self._encode(enc, spec, len(inputs), golds)


TASK_TYPE = SequenceClassification()
