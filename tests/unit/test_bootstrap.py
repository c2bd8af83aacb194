"""The paired bootstrap of the pretrained - random-init difference (bertops.evaluate.bootstrap):
known answers on synthetic data, and per-example statistics that reproduce each task metric."""

import math

import numpy as np
import pytest

from bertops.evaluate import bootstrap as b
from bertops.evaluate.metrics import squad_metrics, token_classification_metrics


def _acc(correct):
    """(seeds, examples) of 0/1 -> (seeds, examples, 2) accuracy stats."""
    c = np.asarray(correct, dtype=float)
    return np.stack([c, np.ones_like(c)], axis=-1)


def test_a_constant_difference_has_a_zero_width_interval_at_that_value():
    rng = np.random.default_rng(1)
    f1 = rng.uniform(0.0, 0.8, size=(3, 200))  # per-example QA F1 of B, 3 seeds
    a = np.stack([f1 + 0.1, np.ones_like(f1)], -1)  # A is 0.1 better on every example and seed
    res = b.paired_bootstrap({"qa": (a, np.stack([f1, np.ones_like(f1)], -1))}, n_boot=500, seed=0)
    t = res["tasks"]["qa"]
    assert t["difference"] == pytest.approx(0.1)
    assert t["low"] == pytest.approx(0.1) and t["high"] == pytest.approx(0.1)
    assert b.outcome(t["low"], t["high"]) == "win"
    assert res["mean"]["difference"] == pytest.approx(0.1)


def test_no_true_difference_gives_an_interval_around_zero_of_the_textbook_width():
    # A and B independent coin flips on 2,000 examples, one seed: the difference of two accuracies
    # has standard error sqrt(2 * 0.25 / n); the 95% interval is about +-1.96 of it and covers 0
    n = 2000
    rng = np.random.default_rng(7)
    a, bb = _acc(rng.integers(0, 2, size=(1, n))), _acc(rng.integers(0, 2, size=(1, n)))
    res = b.paired_bootstrap({"t": (a, bb)}, n_boot=2000, seed=3)["tasks"]["t"]
    assert res["low"] < 0 < res["high"]
    half = (res["high"] - res["low"]) / 2
    assert half == pytest.approx(1.96 * math.sqrt(0.5 / n), rel=0.15)
    assert b.outcome(res["low"], res["high"]) == "tie"


def test_pairing_removes_the_shared_noise():
    # A is right exactly where B is, plus 30 more examples of 1,000: a paired interval excludes 0
    # (an unpaired one at this size would not: both accuracies have SE ~0.016)
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2, size=1000)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:30]] = 1
    res = b.paired_bootstrap({"t": (_acc([better]), _acc([base]))}, n_boot=1000, seed=0)["tasks"]["t"]
    assert res["difference"] == pytest.approx(0.03)
    assert 0 < res["low"] < 0.03 < res["high"]


def test_seeds_are_resampled_too_and_the_result_is_seeded():
    # every example equal within a run, runs differ by seed: only seed resampling can move the mean
    a = _acc(np.array([[1] * 50, [0] * 50, [1] * 50]))  # seed accuracies 1, 0, 1
    bb = _acc(np.zeros((3, 50)))
    r1 = b.paired_bootstrap({"t": (a, bb)}, n_boot=400, seed=5)
    assert r1["tasks"]["t"]["difference"] == pytest.approx(2 / 3)
    assert r1["tasks"]["t"]["low"] == pytest.approx(0.0) and r1["tasks"]["t"]["high"] == pytest.approx(1.0)
    assert r1 == b.paired_bootstrap({"t": (a, bb)}, n_boot=400, seed=5)


def test_the_mean_over_tasks_and_shape_checks():
    one = np.ones((2, 10, 2))
    half = _acc(np.tile([1, 0], (2, 5)))
    res = b.paired_bootstrap({"x": (one, half), "y": (half, half)}, n_boot=200, seed=0)
    assert res["mean"]["difference"] == pytest.approx((0.5 + 0.0) / 2)
    assert res["mean"]["low"] <= 0.25 <= res["mean"]["high"]
    with pytest.raises(ValueError, match="seed runs"):
        b.paired_bootstrap({"x": (one, one), "y": (one[:1], one[:1])})
    with pytest.raises(ValueError, match="one shape"):
        b.paired_bootstrap({"x": (one, one[:, :5])})


def test_example_stats_reproduce_the_task_metrics():
    pred = [["B-class", "O", "B-method"], ["O", "B-x", "I-x"], ["I-class", "O"], ["O", "O"]]
    gold = [["B-class", "O", "B-func"], ["O", "B-x", "I-x"], ["B-class", "O"], ["O", "B-y"]]
    s = b.example_stats("token_classification", "f1", pred, gold)
    assert s.shape == (4, 2)
    assert b.ratio(*s.sum(0)) == pytest.approx(token_classification_metrics(pred, gold)["f1"])
    qp, qg = ["the hound", "a cat", ""], [["hound"], ["dog", "cat"], ["x"]]
    s = b.example_stats("extractive_qa", "f1", qp, qg)
    assert b.ratio(*s.sum(0)) == pytest.approx(squad_metrics(qp, qg)["f1"])
    s = b.example_stats("pair_classification", "accuracy", ["true", "false", "true"], ["true", "true", "true"])
    assert b.ratio(*s.sum(0)) == pytest.approx(2 / 3)
    assert b.example_stats("sequence_classification", "macro_f1", ["a"], ["a"]) is None
