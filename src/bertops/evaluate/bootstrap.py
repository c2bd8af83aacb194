"""Paired bootstrap of a score difference between two encoders, over seeds and test examples.

Pure functions (numpy, seeded, no I/O). Every task metric the verdict uses is a ratio of sums
over examples, so one example is a pair (numerator, denominator):
- accuracy: (1 if right else 0, 1);
- SQuAD F1 / exact match: (the example's best score over its gold answers, 1);
- entity F1 (seqeval micro, conlleval rules): (2 x matched entities, predicted + gold entities),
  since F1 = 2PR/(P+R) = 2 tp / (n_pred + n_gold).
`example_stats` builds these from predict_split's (pred, gold); `ratio` turns summed pairs back
into the metric (0 when the denominator is 0, as seqeval's zero_division=0).

`paired_bootstrap` resamples, in each of `n_boot` draws, the seed runs (one draw of seed indices
shared by every task and by both encoders: a seed is one multi-task fine-tuning) and, per task,
the test examples (one draw of example indices shared by both encoders and all seeds); it
recomputes each task's metric per run on the resample, averages over the drawn runs, and takes
the difference A - B, per task and of the mean over tasks. The interval is the percentile one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

RATIO_METRICS = {"accuracy", "f1", "exact_match"}


def ratio(num, den):
    """num / den elementwise, 0 where den is 0."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def example_stats(task_type: str, metric: str, pred: Sequence, gold: Sequence) -> np.ndarray | None:
    """(n, 2) array of per-example (numerator, denominator) of the task's metric; None when the
    metric is not a ratio of per-example sums (e.g. macro-F1), so no bootstrap is possible."""
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predictions for {len(gold)} gold examples")
    if task_type == "token_classification" and metric == "f1":
        from seqeval.metrics.sequence_labeling import get_entities

        rows = []
        for p, g in zip(pred, gold):
            pe, ge = set(get_entities(list(p))), set(get_entities(list(g)))
            rows.append((2 * len(pe & ge), len(pe) + len(ge)))
        return np.asarray(rows, dtype=float).reshape(-1, 2)
    if task_type == "extractive_qa" and metric in ("f1", "exact_match"):
        from bertops.evaluate.metrics import squad_exact_match, squad_f1

        fn = squad_f1 if metric == "f1" else squad_exact_match
        return np.asarray([(max(fn(p, a) for a in (list(g) or [""])), 1.0) for p, g in zip(pred, gold)],
                          dtype=float).reshape(-1, 2)
    if task_type in ("sequence_classification", "pair_classification") and metric == "accuracy":
        return np.asarray([(float(p == g), 1.0) for p, g in zip(pred, gold)], dtype=float).reshape(-1, 2)
    return None


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, k) indices in [0, n) -> (B, n) counts of each index per row."""
    b = idx.shape[0]
    flat = (idx + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def _score(stats: np.ndarray, ex_w: np.ndarray | None, seed_w: np.ndarray | None) -> np.ndarray:
    """Mean over (weighted) seed runs of each run's metric on (weighted) examples.

    stats: (S, N, 2); ex_w: (B, N) example counts or None (all once); seed_w: (B, S) or None."""
    if ex_w is None:
        m = ratio(stats[:, :, 0].sum(1), stats[:, :, 1].sum(1))[None, :]  # (1, S)
    else:
        m = ratio(ex_w @ stats[:, :, 0].T, ex_w @ stats[:, :, 1].T)  # (B, S)
    if seed_w is None:
        return m.mean(1)
    return (m * seed_w).sum(1) / seed_w.sum(1)


def paired_bootstrap(tasks: Mapping[str, tuple], n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Difference A - B per task and of the mean over tasks, with percentile intervals.

    tasks: {task: (a, b)}, a and b array-likes of shape (S, N, 2): S seed runs (the same number
    for every task and both encoders; run s of A is paired with run s of B), N test examples (the
    same examples in the same order for A and B), (numerator, denominator) per example.
    Returns {"tasks": {task: {"difference", "low", "high"}}, "mean": {...}, "level", "n_boot"};
    "difference" is the observed one (all seeds, all examples)."""
    if not tasks:
        raise ValueError("no tasks to bootstrap")
    arrays = {}
    n_seeds = None
    for t, (a, b) in tasks.items():
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 2 or a.shape[1] == 0:
            raise ValueError(f"task {t!r}: need two (seeds, examples, 2) arrays of one shape, "
                             f"got {a.shape} and {b.shape}")
        if n_seeds not in (None, a.shape[0]):
            raise ValueError(f"task {t!r}: {a.shape[0]} seed runs, other tasks have {n_seeds}")
        n_seeds = a.shape[0]
        arrays[t] = (a, b)
    rng = np.random.default_rng(seed)
    seed_w = _counts(rng.integers(0, n_seeds, size=(n_boot, n_seeds)), n_seeds)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    out: dict = {"tasks": {}, "level": level, "n_boot": n_boot}
    draws, observed = [], []
    for t, (a, b) in arrays.items():
        n = a.shape[1]
        ex_w = _counts(rng.integers(0, n, size=(n_boot, n)), n)
        d = _score(a, ex_w, seed_w) - _score(b, ex_w, seed_w)
        obs = float(_score(a, None, None)[0] - _score(b, None, None)[0])
        lo, hi = np.quantile(d, q)
        out["tasks"][t] = {"difference": obs, "low": float(lo), "high": float(hi)}
        draws.append(d)
        observed.append(obs)
    mean_d = np.mean(draws, axis=0)
    lo, hi = np.quantile(mean_d, q)
    out["mean"] = {"difference": float(np.mean(observed)), "low": float(lo), "high": float(hi)}
    return out


def outcome(low: float, high: float) -> str:
    """win when the whole interval is above 0, loss when below, tie otherwise."""
    return "win" if low > 0 else "loss" if high < 0 else "tie"
