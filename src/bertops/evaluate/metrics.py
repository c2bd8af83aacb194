"""Task metrics as pure functions over predictions and gold labels (no model, no I/O).

All scores are fractions in [0, 1] (SQuAD's official script prints x100; we do not, so every
task's number lives on the same scale). Inputs are the forms `predict_split` returns:

- classification (sequence/pair): one label per example (str, or bool for wic);
- token classification: one BIO tag list per example (word level), scored by entity with seqeval;
- extractive QA: one answer text per example, gold = the list of acceptable answer texts.

Each task type owns its metric (bertops.model.multitask.task_types); this module is the one
entry point: `task_metrics` asks the registry, `task_score` picks the one number per task that
model selection and the registry gate use. The per-type functions are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

from bertops.model.multitask.task_types import get_task_type
from bertops.model.multitask.task_types._classification import (  # noqa: F401  (re-exported)
    classification_metrics,
    confusion_matrix,
)
from bertops.model.multitask.task_types.span import (  # noqa: F401  (re-exported)
    normalize_answer,
    squad_exact_match,
    squad_f1,
    squad_metrics,
)
from bertops.model.multitask.task_types.token import token_classification_metrics  # noqa: F401


def primary_metric(task_type: str, metric: str | None = None) -> str:
    """The metric that is a task's one number: `metric` (TaskParams.metric) when this type has it,
    else the type's default (accuracy for classification, entity F1 for tokens, SQuAD F1 for QA)."""
    tt = get_task_type(task_type)
    return metric if metric in tt.metric_names else tt.primary_metric


def task_metrics(task_type: str, pred: Sequence, gold: Sequence,
                 labels: Sequence | None = None) -> dict[str, float]:
    """All metrics of one task type (labels are needed for the classification types)."""
    return get_task_type(task_type).metrics(pred, gold, labels)


def task_score(task_type: str, metrics: dict[str, float], metric: str | None = None) -> float:
    """The one number per task: accuracy (classification), entity F1 (tokens), SQuAD F1 (QA).

    `metric` (e.g. TaskParams.metric) overrides the default when it names a key of `metrics`.
    """
    key = metric if metric in metrics else get_task_type(task_type).primary_metric
    return float(metrics[key])
