"""Task metrics as pure functions over predictions and gold labels (no model, no I/O).

All scores are fractions in [0, 1] (SQuAD's official script prints x100; we do not, so every
task's number lives on the same scale). Inputs are the forms `predict_split` returns:

- classification (sequence/pair): one label per example (str, or bool for wic);
- token classification: one BIO tag list per example (word level), scored by entity with seqeval;
- extractive QA: one answer text per example, gold = the list of acceptable answer texts.

`task_metrics` dispatches on the task type; `task_score` picks the one number per task that
model selection and the registry gate use.
"""

from __future__ import annotations

import collections
import json
import re
import string
from collections.abc import Sequence
from typing import Any

# The one number per task type (what `TaskParams.metric` names for the built-in tasks).
PRIMARY_METRIC = {
    "sequence_classification": "accuracy",
    "pair_classification": "accuracy",
    "token_classification": "f1",
    "extractive_qa": "f1",
}


def label_key(label: Any) -> str:
    """A comparable string for a label: bools and numbers as JSON (`true`), strings as-is.

    wic labels are JSON booleans in the data but may come back as strings from a model's
    id2label; both `True` and "true" map to "true" so the two forms compare equal.
    """
    if isinstance(label, str):
        return label.lower() if label in ("True", "False") else label
    return json.dumps(label)


# --- classification ---------------------------------------------------------------------------

def confusion_matrix(pred: Sequence, gold: Sequence, labels: Sequence) -> list[list[int]]:
    """Counts[i][j] = examples of gold label i predicted as label j (rows gold, columns predicted).

    A prediction outside `labels` is counted in no column (it is still an error for accuracy).
    """
    _check_lengths(pred, gold)
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
    _check_lengths(pred, gold)
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


# --- token classification ---------------------------------------------------------------------

def token_classification_metrics(pred_tags: Sequence[Sequence[str]],
                                 gold_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 (seqeval, conlleval rules: an entity counts only
    if its type and both boundaries match; a stray I- tag starts a new entity)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    _check_lengths(pred_tags, gold_tags)
    for k, (p, g) in enumerate(zip(pred_tags, gold_tags)):
        if len(p) != len(g):
            raise ValueError(f"example {k}: {len(p)} predicted tags for {len(g)} words")
    pred_l, gold_l = [list(p) for p in pred_tags], [list(g) for g in gold_tags]
    return {
        "precision": float(precision_score(gold_l, pred_l, zero_division=0)),
        "recall": float(recall_score(gold_l, pred_l, zero_division=0)),
        "f1": float(f1_score(gold_l, pred_l, zero_division=0)),
    }


# --- extractive QA: the official SQuAD v1.1 evaluation (evaluate-v1.1.py), kept verbatim in
# behaviour; written here because it is 20 lines and the `evaluate` package would pull a hub client.

def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def squad_f1(prediction: str, ground_truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:  # v1.1 rule: also 0 when both normalise to empty
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(pred_texts: Sequence[str], gold_answer_lists: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact match and token F1, each the max over an example's gold answers, averaged."""
    _check_lengths(pred_texts, gold_answer_lists)
    if not pred_texts:
        raise ValueError("no examples to score")
    em = f1 = 0.0
    for pred, golds in zip(pred_texts, gold_answer_lists):
        golds = list(golds) or [""]  # no gold answer: only the empty prediction matches
        em += max(squad_exact_match(pred, g) for g in golds)
        f1 += max(squad_f1(pred, g) for g in golds)
    n = len(pred_texts)
    return {"exact_match": em / n, "f1": f1 / n}


# --- dispatch ---------------------------------------------------------------------------------

def task_metrics(task_type: str, pred: Sequence, gold: Sequence,
                 labels: Sequence | None = None) -> dict[str, float]:
    """All metrics of one task type (labels are needed for the classification types)."""
    if task_type in ("sequence_classification", "pair_classification"):
        if labels is None:
            raise ValueError(f"{task_type} metrics need the label list")
        return classification_metrics(pred, gold, labels)
    if task_type == "token_classification":
        return token_classification_metrics(pred, gold)
    if task_type == "extractive_qa":
        return squad_metrics(pred, gold)
    raise ValueError(f"unknown task type {task_type!r}")


def task_score(task_type: str, metrics: dict[str, float], metric: str | None = None) -> float:
    """The one number per task: accuracy (classification), entity F1 (tokens), SQuAD F1 (QA).

    `metric` (e.g. TaskParams.metric) overrides the default when it names a key of `metrics`.
    """
    if task_type not in PRIMARY_METRIC:
        raise ValueError(f"unknown task type {task_type!r}")
    key = metric if metric in metrics else PRIMARY_METRIC[task_type]
    return float(metrics[key])


def _check_lengths(pred: Sequence, gold: Sequence) -> None:
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predictions for {len(gold)} gold examples")
