"""The evaluation table's rows for ways of adapting an encoder (bertops.evaluate.modes): each
variant's finetune overrides, the row's numbers and the Markdown, with fine-tuning stubbed."""

from pathlib import Path

import pytest

from bertops.evaluate import modes


def test_variants_name_their_finetune_overrides():
    assert modes.variant("finetune")[1] == {"mode": "finetune", "feature_layers": "last"}
    assert modes.variant("adapters")[1] == {"mode": "adapters", "feature_layers": "last"}
    assert modes.variant("feature_extraction") == modes.variant("feature_extraction:last")
    assert modes.variant("feature_extraction:weighted_sum")[1] == {"mode": "feature_extraction",
                                                                  "feature_layers": "weighted_sum"}
    with pytest.raises(ValueError, match="unknown"):
        modes.variant("distill")


def test_run_fits_each_variant_with_its_mode_and_renders_costs(monkeypatch, tmp_path, repo_params):
    seen = []

    def fake_fit(params, init_dir, run_dir, seed, tasks=None, loggers=None):
        ft = params.finetune
        seen.append((ft.mode, ft.feature_layers, ft.learning_rate, ft.adapters.learning_rate, seed))
        pct = {"finetune": 100.5, "adapters": 1.1, "feature_extraction": 0.2}[ft.mode]
        costs = {"trainable_pct": pct, "bytes_per_task": int(pct * 1e6), "encoder_params": 10}
        return {"model_dirs": {t: str(Path(run_dir) / "model") for t in tasks}, "gate": {"score": 0.5},
                "costs": costs}

    import bertops.train.finetune as finetune

    monkeypatch.setattr(finetune, "fit_multitask", fake_fit)
    score = {"finetune": 0.9, "adapters": 0.8, "feature_extraction": 0.5}
    tasks = ["sentiment", "wic"]

    def scorer(dirs):  # test metrics per task, by the mode the dir was trained in
        mode = next(iter(dirs.values())).parent.name.split("-")[0]
        return {t: {"accuracy": score[mode]} for t in tasks}

    out = modes.run(repo_params, repo_params.finetune, ["finetune", "adapters", "feature_extraction:concat_last_four"],
                    "enc", tmp_path, 3, tasks, scorer, {t: "sequence_classification" for t in tasks},
                    lrs={"finetune": 4e-4})
    lr = repo_params.finetune.learning_rate  # the encoder rate: only full fine-tuning trains the encoder
    alr = repo_params.finetune.adapters.learning_rate
    assert seen == [("finetune", "last", 4e-4, alr, 3), ("adapters", "last", lr, alr, 3),
                    ("feature_extraction", "concat_last_four", lr, alr, 3)]
    assert lr != 4e-4  # the full row runs at the rate it is given (the evaluate stage's chosen one)
    assert [r["score"] for r in out["rows"]] == pytest.approx([0.9, 0.8, 0.5])
    assert [r["trainable_pct"] for r in out["rows"]] == [100.5, 1.1, 0.2]
    md = out["markdown"].splitlines()
    assert md[0].startswith("| variant | score | sentiment | wic |") and "p50 ms" not in md[0]  # not timed
    assert md[3] == f"| adapters (LoRA per task) | 0.800 | 0.800 | 0.800 | 1.10% | 1.1 MB | {alr:g} |"
    assert out["margin"]["adapters_minus_full"]["test"] == pytest.approx(0.8 - 0.9)
    assert "frozen features (concat_last_four)" in md[4]


def test_adapters_rate_is_chosen_on_validation_from_its_own_grid(monkeypatch, tmp_path, repo_params):
    """adapters at every rate of their grid; the best validation (gate) score is kept whatever the
    test says; the full row keeps its given rate; the rows carry their latency and the margin."""
    seen = []
    validation = {1e-3: 0.4, 5e-3: 0.7, 1e-2: 0.6}  # adapters' gate score per rate

    def fake_fit(params, init_dir, run_dir, seed, tasks=None, loggers=None):
        ft = params.finetune
        lr = ft.adapters.learning_rate if ft.mode == "adapters" else ft.learning_rate
        seen.append((ft.mode, lr))
        Path(run_dir, "model").mkdir(parents=True)
        costs = {"trainable_pct": 1.0, "bytes_per_task": 10, "encoder_params": 10}
        return {"model_dirs": {t: str(Path(run_dir) / "model") for t in tasks}, "costs": costs,
                "gate": {"score": validation[lr] if ft.mode == "adapters" else 0.65}}

    import bertops.train.finetune as finetune

    monkeypatch.setattr(finetune, "fit_multitask", fake_fit)
    tasks = ["sentiment"]
    timed = []

    def scorer(dirs):  # test: the rate with the best validation score is the worst on test
        d = next(iter(dirs.values())).parent.name
        return {t: {"accuracy": {"lr0.005": 0.5, "lr0.01": 0.9}.get(d, 0.8)} for t in tasks}

    def latency(dirs):
        timed.append(next(iter(dirs.values())))
        return {"p50_ms": 2.0, "p95_ms": 3.0, "requests": 4}

    out = modes.run(repo_params, repo_params.finetune, ["finetune", "adapters"], "enc", tmp_path, 3, tasks, scorer,
                    {t: "sequence_classification" for t in tasks}, lrs={"finetune": 1e-3},
                    grids={"adapters": [1e-3, 5e-3, 1e-2]}, latency=latency)
    assert seen == [("finetune", 1e-3), ("adapters", 1e-3), ("adapters", 5e-3), ("adapters", 1e-2)]
    full, lora = out["rows"]
    assert lora["lr"] == 5e-3 and full["lr"] == 1e-3
    assert lora["lr_selection"] == [{"lr": lr, "validation_score": v} for lr, v in validation.items()]
    assert not (tmp_path / "adapters" / "lr0.01").exists()  # the rates not kept are deleted
    # each row timed on its own model: the full run's and the kept adapters run's dirs
    assert timed == [tmp_path / "finetune" / "model", tmp_path / "adapters" / "lr0.005" / "model"]
    assert full["latency_ms"] == {"p50_ms": 2.0, "p95_ms": 3.0, "requests": 4}
    assert out["margin"]["adapters_minus_full"] == pytest.approx(
        {"test": 0.5 - 0.8, "validation": 0.7 - 0.65, "adapters_lr": 5e-3, "full_lr": 1e-3})
    md = out["markdown"].splitlines()
    assert md[0].endswith("| lr | p50 ms | p95 ms |")
    assert md[3].endswith("| 0.005 (chosen) | 2.0 | 3.0 |")
    lines = modes.report_lines(out, 3, {"requests": 4, "warmup": 5, "threads": 1, "cpu_count": 2, "loadavg_1m": 0.5})
    assert "Adapters minus full fine-tuning: -0.300 on test (+0.050 on validation)" in lines[1]
    assert "batch 1, 4 requests" in lines[1] and "load average 0.5" in lines[1]
