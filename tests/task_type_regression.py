"""A fifth task type, written as a new kind of task would be: text_regression (one text -> a number).

It is a complete module of bertops.model.multitask.task_types: dropped into that package as
`regression.py` it is found by discovery (test_task_types copies the package to prove it); in the
tests it is registered with `register_task_type`. Params: one `text_fields` entry; `label_field`
holds the number. Metrics: mean absolute error and R² (the primary, higher is better).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

try:  # as a module of the task_types package
    from ._base import NOT_CHECKED, BertopsError, Column, RecordRule, TaskSpec, TaskType, check_lengths
except ImportError:  # as tests.task_type_regression
    from bertops.model.multitask.task_types._base import (
        NOT_CHECKED,
        BertopsError,
        Column,
        RecordRule,
        TaskSpec,
        TaskType,
        check_lengths,
    )

FINITE_TARGET = "finite_target"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TextRegression(TaskType):
    name = "text_regression"
    pooled = True
    n_text_fields = 1
    needs_labels = False
    metric_names = ("mae", "r2")
    primary_metric = "r2"
    balance_unit = "examples"

    def num_labels(self, spec: TaskSpec) -> int:
        return 1

    def record_input(self, spec: TaskSpec, rec: dict) -> Any:
        return rec[spec.text_fields[0]]

    def gold_label(self, spec: TaskSpec, rec: dict) -> float:
        return float(rec[spec.label_field])

    def normalize_input(self, spec: TaskSpec, x: Any) -> Any:
        if not isinstance(x, str):
            raise BertopsError(f"task {spec.name!r} takes a text, got {type(x).__name__}")
        return x

    def check_record(self, spec: TaskSpec, rec: dict) -> tuple[str, str] | None:
        field = spec.text_fields[0]
        if not isinstance(rec.get(field), str):
            return f"field {field!r} is a string", ""
        if spec.label_field in rec and not _number(rec[spec.label_field]):
            return "target is a number", f"{rec[spec.label_field]!r}"
        return None

    def encode(self, tokenizer, spec: TaskSpec, inputs: Sequence[Any], golds: Sequence[float] | None = None):
        enc = tokenizer(list(inputs), truncation=True, max_length=spec.max_seq_length)
        feats = []
        for i in range(len(inputs)):
            f = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                 "attention_mask": enc["attention_mask"][i], "example_index": i}
            if golds is not None:
                f["labels"] = float(golds[i])
            feats.append(f)
        return feats

    def head(self, spec: TaskSpec, in_dim: int, pooled_dim: int, dropout: float):
        from torch import nn

        return nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled_dim, 1))

    def loss(self, spec: TaskSpec, logits, batch: dict):
        from torch import nn

        return nn.functional.mse_loss(logits.squeeze(-1), batch["labels"])

    def decode(self, spec: TaskSpec, inputs, features, logits) -> list[dict]:
        return [{"value": float(lg[0])} for lg in logits]

    def flat(self, out: dict) -> dict:
        return {**out, "prediction": f"{out['value']:.4f}", "score": out["value"]}

    def prediction(self, decoded: dict) -> Any:
        return decoded["value"]

    def describe(self, pred: dict) -> str:
        return f"{pred['value']:.4f}"

    def metrics(self, pred: Sequence, gold: Sequence, labels: Sequence | None = None) -> dict[str, float]:
        check_lengths(pred, gold)
        if not gold:
            raise ValueError("no examples to score")
        mean = sum(gold) / len(gold)
        ss_res = sum((g - p) ** 2 for p, g in zip(pred, gold))
        ss_tot = sum((g - mean) ** 2 for g in gold)
        return {"mae": sum(abs(g - p) for p, g in zip(pred, gold)) / len(gold),
                "r2": 1 - ss_res / ss_tot if ss_tot else 0.0}

    def majority_predictions(self, spec: TaskSpec, train_records: Sequence[dict],
                             test_records: Sequence[dict]) -> list:
        """The train mean for every example (R² 0 on a test split with the same mean)."""
        values = [self.gold_label(spec, r) for r in train_records]
        return [sum(values) / len(values)] * len(test_records)

    def columns(self, tp) -> list[Column]:
        return [Column(tp.text_fields[0], "text"), Column(tp.label_field, "float")]

    def record_rules(self, tp) -> list[RecordRule]:
        def finite(rec: dict) -> Any:
            value = rec.get(tp.label_field)
            if not _number(value):
                return NOT_CHECKED  # reported by is_float
            return None if math.isfinite(value) else f"target {value!r} is not finite"

        return [RecordRule(FINITE_TARGET, finite)]

    def example_inputs(self, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list:
        return [rec.get(f) for f in text_fields]

    def prose(self, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list[str]:
        return [rec[f] for f in text_fields if isinstance(rec.get(f), str)]


TASK_TYPE = TextRegression()
