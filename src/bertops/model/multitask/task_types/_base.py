"""`TaskType`: everything that differs between kinds of task, in one object per kind.

A kind of task (sequence classification, extractive QA, ...) is a subclass of `TaskType` in its own
module of this package, which ends with `TASK_TYPE = TheType()`; the registry (`__init__.py`)
finds it there. It owns, for its kind:

- parameters: which `tasks.<name>` fields it needs (`check_params`) and how labels are stored;
- data: a record's model input and gold answer, the check `load_records` applies to each record,
  and the declarative column checks and per-record rules the validation stage runs;
- the model: features from inputs (`encode`), the head, the loss, and decoding logits into one
  prediction per input (`decode`), plus the flat form served by MLflow (`flat`);
- evaluation: its metrics, the primary one, and the no-training majority baseline.

Modules here import only the standard library at import time (torch, seqeval inside functions):
bertops.config reads the registry when params load, and the package ships alone with the MLflow
model, so it must import nothing else of bertops.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..spec import IGNORE_INDEX, BertopsError, TaskSpec, label_str

if TYPE_CHECKING:
    import torch
    from torch import nn

NOT_CHECKED = object()  # a record rule's answer for a record it does not apply to


@dataclass(frozen=True)
class Column:
    """A declarative per-field check, run by Great Expectations (bertops.validation.suites).

    kind: "text" (present, a string, not blank), "str" (present, a string, may be blank),
    "label" (present, and its JSON in the task's labels), or a Python type name such as "list",
    "dict", "float" (present, of that type).
    """

    field: str
    kind: str


@dataclass(frozen=True)
class RecordRule:
    """A per-record rule Great Expectations has no expectation for.

    `check(record)` returns None (passes), a detail string (fails) or NOT_CHECKED (does not apply:
    not counted, e.g. a field of the wrong type that a `Column` check already reports).
    """

    name: str
    check: Callable[[dict], Any]


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def label_json(value: Any) -> str | None:
    """A label as JSON text, so that a set check tells `true` from `1` and `"true"`
    (in Python True == 1, and pandas' isin compares by ==)."""
    return None if value is None else json.dumps(value, sort_keys=True)


def check_lengths(pred: Sequence, gold: Sequence) -> None:
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predictions for {len(gold)} gold examples")


class TaskType:
    """Base class; the defaults fit a task that predicts one class per input."""

    name: str = ""
    # inputs: a second text (pair, or question + context), and what its two parts are called
    pair_input: bool = False
    pair_parts: tuple[str, str] = ("text", "text_pair")
    # the head reads the pooled [CLS] vector (else every token's features)
    pooled: bool = False
    # one of spec.labels per example (accuracy, confusion matrix)
    classes: bool = False
    # params: exactly this many text_fields (None: not used); a `labels` list is required
    n_text_fields: int | None = None
    needs_labels: bool = True
    # metrics: every key `metrics` returns, and the default one number per task
    metric_names: tuple[str, ...] = ()
    primary_metric: str = ""
    # validation report: what class_balance counts
    balance_unit: str = "examples per class"

    def __repr__(self) -> str:
        return f"<task type {self.name}>"

    # -- parameters ------------------------------------------------------------------------------

    def check_params(self, tp) -> str | None:
        """What is wrong with a `TaskParams` of this type, or None."""
        if self.n_text_fields is not None and len(tp.text_fields) != self.n_text_fields:
            return f"{self.name} needs exactly {self.n_text_fields} text_fields"
        if self.needs_labels and not tp.labels:
            return f"{self.name} needs a `labels` list"
        return None

    def spec_labels(self, labels: Sequence[Any]) -> list[str]:
        """The label list a TaskSpec keeps (the head's output order)."""
        return [label_str(x) for x in labels]

    def num_labels(self, spec: TaskSpec) -> int:
        return len(spec.labels)

    # -- records and inputs ----------------------------------------------------------------------

    def record_input(self, spec: TaskSpec, rec: dict) -> Any:
        """The model input of a record, in the form `MultiTaskModel.predict` takes."""
        raise NotImplementedError

    def gold_label(self, spec: TaskSpec, rec: dict) -> Any:
        """The gold answer of a record, in the form the metrics take."""
        raise NotImplementedError

    def training_target(self, spec: TaskSpec, rec: dict) -> Any:
        """What `encode` takes as golds for training features."""
        return self.gold_label(spec, rec)

    def normalize_input(self, spec: TaskSpec, x: Any) -> Any:
        """A plain input (not a record dict) checked and put in the form `encode` takes."""
        raise NotImplementedError

    def check_record(self, spec: TaskSpec, rec: dict) -> tuple[str, str] | None:
        """(rule, detail) for a record `load_records` must refuse, or None."""
        return None

    # -- model -----------------------------------------------------------------------------------

    def encode(self, tokenizer, spec: TaskSpec, inputs: Sequence[Any],
               golds: Sequence[Any] | None = None) -> list[dict]:
        """Features (input_ids, token_type_ids, attention_mask, example_index, targets...)."""
        raise NotImplementedError

    def head(self, spec: TaskSpec, in_dim: int, pooled_dim: int, dropout: float) -> nn.Module:
        raise NotImplementedError

    def loss(self, spec: TaskSpec, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, spec: TaskSpec, inputs: Sequence[Any], features: Sequence[dict],
               logits: Sequence[torch.Tensor]) -> list[dict]:
        """One prediction dict per input from per-feature logits."""
        raise NotImplementedError

    def flat(self, out: dict) -> dict:
        """A `decode` dict plus "prediction" (one string) and "score" (one number), for serving."""
        raise NotImplementedError

    def prediction(self, decoded: dict) -> Any:
        """A `decode` dict in the form the metrics take."""
        raise NotImplementedError

    def describe(self, pred: dict) -> str:
        """One line for `bertops predict`."""
        raise NotImplementedError

    # -- evaluation ------------------------------------------------------------------------------

    def metrics(self, pred: Sequence, gold: Sequence, labels: Sequence | None = None) -> dict[str, float]:
        raise NotImplementedError

    def majority_predictions(self, spec: TaskSpec, train_records: Sequence[dict],
                             test_records: Sequence[dict]) -> list:
        """The no-training baseline's predictions for `test_records` (from the train split only)."""
        raise NotImplementedError

    # -- validation ------------------------------------------------------------------------------

    def columns(self, tp) -> list[Column]:
        """Per-field checks, in order; the frame validation builds holds id + these fields."""
        raise NotImplementedError

    def record_rules(self, tp) -> list[RecordRule]:
        return []

    def example_inputs(self, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list:
        """The texts that make an example's input (one key for 'no input in two splits')."""
        raise NotImplementedError

    def prose(self, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list[str]:
        """The prose of an example that must not occur in the pretraining corpus."""
        raise NotImplementedError

    def class_balance(self, records: Sequence[dict], label_field: str) -> dict[str, int] | None:
        """Counts for the validation report (None: nothing to count)."""
        return None


def need_pair(task_type: TaskType, spec: TaskSpec, x: Any) -> tuple[str, str]:
    """A two-string input, or a BertopsError naming the task and what it takes."""
    if not (isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(t, str) for t in x)):
        a, b = task_type.pair_parts
        raise BertopsError(f"task {spec.name!r} takes a pair ({a}, {b}), got {x!r:.80}")
    return tuple(x)


__all__ = ["IGNORE_INDEX", "NOT_CHECKED", "BertopsError", "Column", "RecordRule", "TaskSpec", "TaskType",
           "check_lengths", "is_str_list", "label_json", "label_str", "need_pair"]
