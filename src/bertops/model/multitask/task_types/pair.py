"""pair_classification: two texts -> one label. Features: [CLS] A [SEP] B [SEP] with segment ids
0/1, truncated longest-first as BERT's run_classifier; the head reads the pooled [CLS] vector.
Params: two `text_fields`, `labels`. Inputs: (text_a, text_b)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._base import TaskSpec, need_pair
from ._classification import ClassificationType


class PairClassification(ClassificationType):
    name = "pair_classification"
    n_text_fields = 2
    pair_input = True
    pair_parts = ("text_a", "text_b")

    def record_input(self, spec: TaskSpec, rec: dict) -> Any:
        return (rec[spec.text_fields[0]], rec[spec.text_fields[1]])

    def normalize_input(self, spec: TaskSpec, x: Any) -> Any:
        return need_pair(self, spec, x)

    def encode(self, tokenizer, spec: TaskSpec, inputs: Sequence[Any],
               golds: Sequence[str] | None = None) -> list[dict]:
        enc = tokenizer([a for a, _ in inputs], [b for _, b in inputs], truncation="longest_first",
                        max_length=spec.max_seq_length)
        return self._encode(enc, spec, len(inputs), golds)


TASK_TYPE = PairClassification()
