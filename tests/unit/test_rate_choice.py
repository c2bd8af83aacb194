"""bertops.evaluate.rates.choose: the one rule by which the evaluate stage picks a learning rate
(each encoder's lr grid and the adapters' grid both call it)."""

from pathlib import Path

import pytest

from bertops.evaluate import rates


def _fitter(tmp_path, scores):
    fitted = []

    def fit(lr):
        fitted.append(lr)
        run = tmp_path / f"lr{lr:g}"
        (run / "model").mkdir(parents=True)
        return {"a": run / "model"}, {"gate": {"score": scores[lr]}, "score": scores[lr] + 1}, run

    return fit, fitted


def test_best_validation_score_is_kept_ties_to_the_first_and_the_others_deleted(tmp_path):
    fit, fitted = _fitter(tmp_path, {1e-3: 0.4, 2e-3: 0.7, 5e-3: 0.7, 1e-2: 0.1})
    sel = rates.choose([1e-3, 2e-3, 5e-3, 1e-2], fit)
    assert fitted == [1e-3, 2e-3, 5e-3, 1e-2]
    assert sel.point == 2e-3 and sel.run_dir == tmp_path / "lr0.002"  # tie with 5e-3: the first
    assert sel.model_dirs == {"a": tmp_path / "lr0.002" / "model"} and sel.result["gate"]["score"] == 0.7
    assert sel.lr_selection() == [{"lr": 1e-3, "validation_score": 0.4}, {"lr": 2e-3, "validation_score": 0.7},
                                  {"lr": 5e-3, "validation_score": 0.7}, {"lr": 1e-2, "validation_score": 0.1}]
    assert [r["score"] for r in sel.results] == pytest.approx([1.4, 1.7, 1.7, 1.1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr0.002"]  # the losers' runs deleted


def test_a_fit_without_a_gate_score_is_named(tmp_path):
    with pytest.raises(ValueError, match="no gate"):
        rates.choose([1e-3], lambda lr: ({}, {"score": 0.5}, Path(tmp_path)))
