"""What sequence and pair classification share: one label per input from the pooled [CLS] vector.

The two differ only in their inputs (one text, or two with segment ids): see sequence.py, pair.py.
Metrics: accuracy and macro-F1 over a confusion matrix (pure Python).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Sequence
from typing import Any

from ._base import Column, TaskSpec, TaskType, check_lengths, label_json, label_str


def label_key(label: Any) -> str:
    """A comparable string for a label: bools and numbers as JSON (`true`), strings as-is.

    wic labels are JSON booleans in the data but may come back as strings from a model's
    id2label; both `True` and "true" map to "true" so the two forms compare equal.
    """
    if isinstance(label, str):
        return label.lower() if label in ("True", "False") else label
    return json.dumps(label)


def confusion_matrix(pred: Sequence, gold: Sequence, labels: Sequence) -> list[list[int]]:
    """Counts[i][j] = examples of gold label i predicted as label j (rows gold, columns predicted).

    A prediction outside `labels` is counted in no column (it is still an error for accuracy).
    """
    check_lengths(pred, gold)
    index = {label_key(lab): i for i, lab in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for p, g in zip(pred, gold):
        gi, pi = index.get(label_key(g)), index.get(label_key(p))
        if gi is None:
            raise ValueError(f"gold label {g!r} is not one of {list(labels)}")
        if pi is not None:
            counts[gi][pi] += 1
    return counts


def classification_metrics(pred: Sequence, gold: Sequence, labels: Sequence) -> dict[str, float]:
    """Accuracy and macro-F1.

    Macro-F1 averages the per-class F1 over the classes that occur in gold or in the predictions
    (scikit-learn's default), so a class absent from a small test split does not count as 0.
    """
    check_lengths(pred, gold)
    if not gold:
        raise ValueError("no examples to score")
    cm = confusion_matrix(pred, gold, labels)
    n = len(gold)
    correct = sum(cm[i][i] for i in range(len(labels)))
    f1s = []
    for i in range(len(labels)):
        tp = cm[i][i]
        support = sum(cm[i])  # gold count
        predicted = sum(row[i] for row in cm)
        if support == 0 and predicted == 0:
            continue
        f1s.append(2 * tp / (support + predicted))  # = 2PR/(P+R), 0 when tp == 0
    return {"accuracy": correct / n, "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0}


def majority_label(spec: TaskSpec, train_records: Sequence[dict]) -> str:
    """The most frequent train label (ties: the first in the task's label order)."""
    gold_label = spec.task_type.gold_label
    counts = collections.Counter(gold_label(spec, r) for r in train_records)
    if not counts:
        raise ValueError(f"task {spec.name!r}: empty train split, no majority class")
    top = max(counts.values())
    return next(lab for lab in spec.labels if counts.get(lab) == top)


class ClassificationType(TaskType):
    """One label per input; the head reads the pooled [CLS] vector (BERT's run_classifier)."""

    pooled = True
    classes = True
    metric_names = ("accuracy", "macro_f1")
    primary_metric = "accuracy"

    def gold_label(self, spec: TaskSpec, rec: dict) -> str:
        value = rec[spec.label_field]
        if isinstance(value, int) and not isinstance(value, bool) and spec.labels \
                and label_str(value) not in spec.labels and 0 <= value < len(spec.labels):
            return spec.labels[value]  # a `datasets` ClassLabel index
        return label_str(value)

    def check_record(self, spec: TaskSpec, rec: dict) -> tuple[str, str] | None:
        for f in spec.text_fields:
            if f not in rec:
                return f"{self.name} record has field {f!r}", ""
            if not isinstance(rec[f], str):
                return f"field {f!r} is a string", ""
        if spec.label_field in rec and self.gold_label(spec, rec) not in spec.labels:
            return "label is one of the task's labels", f"{rec[spec.label_field]!r} not in {spec.labels}"
        return None

    def _encode(self, enc, spec: TaskSpec, n: int, labels: Sequence[str] | None) -> list[dict]:
        label_id = {name: i for i, name in enumerate(spec.labels)}
        feats = []
        for i in range(n):
            f = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                 "attention_mask": enc["attention_mask"][i], "example_index": i}
            if labels is not None:
                f["labels"] = label_id[labels[i]]
            feats.append(f)
        return feats

    def head(self, spec: TaskSpec, in_dim: int, pooled_dim: int, dropout: float):
        from torch import nn

        return nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled_dim, self.num_labels(spec)))

    def loss(self, spec: TaskSpec, logits, batch: dict):
        from torch import nn

        return nn.functional.cross_entropy(logits, batch["labels"])

    def decode(self, spec: TaskSpec, inputs, features, logits) -> list[dict]:
        import torch

        preds = []
        for lg in logits:
            p = torch.softmax(lg, -1)
            k = int(p.argmax())
            preds.append({"label": spec.labels[k], "score": float(p[k]),
                          "scores": {name: float(x) for name, x in zip(spec.labels, p)}})
        return preds

    def flat(self, out: dict) -> dict:
        return {**out, "prediction": out["label"]}

    def prediction(self, decoded: dict) -> Any:
        return decoded["label"]

    def describe(self, pred: dict) -> str:
        others = ", ".join(f"{k}={v:.3f}" for k, v in pred["scores"].items())
        return f"{pred['label']}\t{pred['score']:.3f}\t({others})"

    def metrics(self, pred: Sequence, gold: Sequence, labels: Sequence | None = None) -> dict[str, float]:
        if labels is None:
            raise ValueError(f"{self.name} metrics need the label list")
        return classification_metrics(pred, gold, labels)

    def majority_predictions(self, spec: TaskSpec, train_records: Sequence[dict],
                             test_records: Sequence[dict]) -> list:
        return [majority_label(spec, train_records)] * len(test_records)

    def columns(self, tp) -> list[Column]:
        return [*(Column(f, "text") for f in tp.text_fields), Column(tp.label_field, "label")]

    def example_inputs(self, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list:
        return [rec.get(f) for f in text_fields]

    def prose(self, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list[str]:
        return [rec[f] for f in text_fields if isinstance(rec.get(f), str)]

    def class_balance(self, records: Sequence[dict], label_field: str) -> dict[str, int] | None:
        counts: collections.Counter[str] = collections.Counter()
        for rec in records:
            value = rec.get(label_field)
            if value is not None:
                counts[label_json(value) if not isinstance(value, str) else value] += 1
        return dict(counts)
