"""The evaluate stage's rows comparing ways to adapt our encoder (evaluate.modes), with fine-tuning
stubbed (tests/unit/test_evaluate_stage.py's stub): the full fine-tuning row is the lr grid's kept
run, not fitted again; each row's latency is measured on its own model; the adapters' rate comes
from their own grid, chosen on validation. The real code path: tests/integration/test_eval_modes.py."""

import json
import sys
from pathlib import Path

import pytest

from tests.unit.test_evaluate_stage import _params, events, stub  # noqa: F401  (stub: a fixture)

MODES = ["finetune", "adapters", "feature_extraction:last"]


@pytest.fixture
def fits(stub, monkeypatch):  # noqa: F811
    """The stub's fit_multitask, logging (mode, feature_layers, rates) and returning model_dirs and costs."""
    mod = sys.modules["bertops.train.finetune"]
    real, log = mod.fit_multitask, []

    def fit_multitask(params, init_dir, out_dir, seed, random_init=False, tasks=None, loggers=None):
        ft = params.finetune
        log.append((ft.mode, ft.feature_layers, ft.learning_rate, ft.adapters.learning_rate))
        r = real(params, init_dir, out_dir, seed, random_init, tasks, loggers)
        if ft.mode == "adapters":  # the adapters' validation score by their rate: 1e-2 is best
            r["gate"]["score"] = {5e-3: 0.3, 1e-2: 0.55}.get(ft.adapters.learning_rate, 0.1)
        if ft.mode == "feature_extraction" and ft.head_learning_rate == 2e-2:  # frozen: a higher head rate wins
            r["gate"]["score"] = 0.45
        costs = {"trainable_pct": 1.0, "bytes_per_task": 10, "encoder_params": 10}
        return {**r, "model_dirs": {t: r["model_dir"] for t in tasks}, "costs": costs}

    monkeypatch.setattr(mod, "fit_multitask", fit_multitask)
    return log


def test_full_row_is_the_lr_grids_run_and_rows_are_timed_on_their_own_models(tmp_path, fits, monkeypatch):
    from bertops.evaluate import latency
    from bertops.stages import evaluate

    timed = []

    def measure(dirs, reqs, warmup, threads):
        d = Path(next(iter(dirs.values())))
        assert d.is_dir()  # the row's model still exists when it is timed
        timed.append(d.parent.relative_to(tmp_path / "evaluate").parts[1:])
        return {"p50_ms": 1.0 + len(timed), "p95_ms": 9.0, "requests": len(reqs)}

    monkeypatch.setattr(latency, "measure", measure)
    logged = {}
    monkeypatch.setattr(evaluate.tracking, "log_metrics", lambda m, step=None: logged.update(_flatten(m)))
    params = _params(tmp_path, lr_grid=[5e-4, 1e-3, 2e-3], seeds=[7], baselines=["majority"],
                     modes=MODES, adapters_lr_grid=[5e-3, 1e-2], latency_requests=6)
    evaluate.main(params)
    # 3 grid runs (full fine-tuning of the pretrained encoder), adapters at each of their rates, frozen
    # features: the full row is the grid's kept run (5e-4, best on validation), not a 4th full fit
    assert [(f[0], f[2] if f[0] != "adapters" else f[3]) for f in fits] == [
        ("finetune", 5e-4), ("finetune", 1e-3), ("finetune", 2e-3), ("adapters", 5e-3), ("adapters", 1e-2),
        ("feature_extraction", 1e-3)]
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    rows = {r["variant"]: r for r in m["modes"]}
    full = rows["finetune"]
    assert full["lr"] == 5e-4 and full["validation_score"] == 0.6  # the grid's chosen run
    assert full["lr_selection"] == [{"lr": 5e-4, "validation_score": 0.6}, {"lr": 1e-3, "validation_score": 0.4},
                                    {"lr": 2e-3, "validation_score": 0.5}]
    assert full["tasks"]["sentiment"] == m["pretrained"]["sentiment"]["accuracy"]["mean"]
    # the grid's run was scored on test once (pipeline, pretrained seed 7, adapters, frozen: 4 x 3 tasks)
    assert sum(1 for e in events if e[0] == "predict") == 12
    assert rows["adapters"]["lr"] == 1e-2 and [g["lr"] for g in rows["adapters"]["lr_selection"]] == [5e-3, 1e-2]
    assert m["modes_margin"]["adapters_minus_full"]["validation"] == pytest.approx(0.55 - 0.6)
    # each row timed on its own model, the same 6 requests
    assert timed == [("fits", "pretrained", "lr0.0005", "seed7"), ("modes", "adapters", "lr0.01"),
                     ("modes", "feature_extraction-last")]
    assert [r["latency_ms"]["p50_ms"] for r in m["modes"]] == [2.0, 3.0, 4.0]
    assert {r["latency_ms"]["requests"] for r in m["modes"]} == {6}
    assert m["modes_latency"]["requests"] == 6 and m["modes_latency"]["threads"] == 1
    md = (tmp_path / "evaluate" / "report.md").read_text()
    assert "| full fine-tuning | 0.489 |" in md and "| 0.0005 (chosen) | 2.0 | 9.0 |" in md
    assert "batch 1, 6 requests" in md and "Adapters minus full fine-tuning" in md
    assert not list((tmp_path / "evaluate").glob(".evaluate-*"))  # every row's model deleted after
    # MLflow gets each row's score and p50 under names without ':', and the margin
    margin = m["modes_margin"]["adapters_minus_full"]
    assert {k: v for k, v in logged.items() if k.startswith("modes.")} == {
        "modes.finetune.score": full["score"], "modes.finetune.p50_ms": 2.0,
        "modes.adapters.score": rows["adapters"]["score"], "modes.adapters.p50_ms": 3.0,
        "modes.feature_extraction_last.score": rows["feature_extraction:last"]["score"],
        "modes.feature_extraction_last.p50_ms": 4.0}
    assert logged["modes_margin.adapters_minus_full.test"] == margin["test"]
    assert not [k for k in logged if ":" in k]
    # and the headline (metrics/evaluate.json) carries the same rows and the margin
    from bertops.stages import headline

    top = headline.headline("evaluate", params)
    assert top["modes"]["feature_extraction_last"] == {"score": round(rows["feature_extraction:last"]["score"], 4),
                                                       "p50_ms": 4.0}
    assert set(top["modes"]) == {"finetune", "adapters", "feature_extraction_last"}
    assert top["adapters_minus_full"] == {"test": round(margin["test"], 4),
                                          "validation": round(margin["validation"], 4)}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_full_row_is_fitted_when_the_grid_run_is_another_layer_choice(tmp_path, fits):
    from bertops.stages import evaluate

    params = _params(tmp_path, lr_grid=[5e-4, 1e-3], seeds=[7], baselines=["majority"], modes=["finetune"],
                     latency_requests=0)
    params = params.model_copy(update={"finetune": params.finetune.model_copy(
        update={"feature_layers": "second_to_last"})})
    evaluate.main(params)
    assert [f[:3] for f in fits] == [("finetune", "second_to_last", 5e-4), ("finetune", "second_to_last", 1e-3),
                                     ("finetune", "last", 5e-4)]  # the row's own fit, at the chosen rate
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert m["modes"][0]["latency_ms"] is None and m["modes_latency"] is None
    assert "p50 ms" not in (tmp_path / "evaluate" / "report.md").read_text()


def test_frozen_features_row_takes_its_head_rate_from_its_own_grid(tmp_path, fits):
    """evaluate.frozen_lr_grid: the frozen-features row is fitted at each head rate (its encoder rate
    untouched) and keeps the best on validation, as the adapters' grid does."""
    from bertops.stages import evaluate

    evaluate.main(_params(tmp_path, lr_grid=[], seeds=[7], baselines=["majority"], modes=["feature_extraction:last"],
                          frozen_lr_grid=[2e-3, 2e-2], latency_requests=0))
    # (mode, feature_layers, encoder lr, adapters lr) per fit, then the head rate the stub saw
    assert [f[:3] for f in fits] == [("feature_extraction", "last", 1e-3)] * 2
    row = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())["modes"][0]
    assert row["variant"] == "feature_extraction:last" and row["lr"] == 2e-2 and row["validation_score"] == 0.45
    assert row["lr_selection"] == [{"lr": 2e-3, "validation_score": 0.4}, {"lr": 2e-2, "validation_score": 0.45}]
    assert "| 0.02 (chosen) |" in (tmp_path / "evaluate" / "report.md").read_text()


def test_full_row_fitted_anew_trains_at_the_chosen_rate_and_dropout(tmp_path, stub, fits):  # noqa: F811
    """With heads elsewhere than the last layer the grid's run is not the full row, which is then fitted
    at the pretrained encoder's chosen point: its rate *and* its fine-tuning dropout."""
    from bertops.stages import evaluate

    params = _params(tmp_path, lr_grid=[1e-3, 2e-3], encoder_dropout_grid=[None, 0.0], seeds=[7], baselines=[],
                     modes=["finetune"], latency_requests=0)
    params = params.model_copy(update={"finetune": params.finetune.model_copy(
        update={"feature_layers": "second_to_last"})})
    evaluate.main(params)
    # the stub: dropout 0 gains 0.2 on validation for the pretrained encoder, 2e-3 beats 1e-3
    assert [(c["lr"], c["dropout"]) for c in stub] == [(1e-3, None), (2e-3, None), (1e-3, 0.0), (2e-3, 0.0),
                                                       (2e-3, 0.0)]
    assert [f[:2] for f in fits] == [("finetune", "second_to_last")] * 4 + [("finetune", "last")]
    row = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())["modes"][0]
    assert row["variant"] == "finetune" and row["lr"] == 2e-3
