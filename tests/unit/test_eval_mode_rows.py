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
        seen.append((ft.mode, ft.feature_layers, ft.learning_rate, seed))
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
                    full_lr=4e-4)
    lr = repo_params.finetune.learning_rate  # the encoder rate: only full fine-tuning trains the encoder
    assert seen == [("finetune", "last", 4e-4, 3), ("adapters", "last", lr, 3),
                    ("feature_extraction", "concat_last_four", lr, 3)]
    assert lr != 4e-4  # the full row runs at the rate it is given (the evaluate stage's chosen one)
    assert [r["score"] for r in out["rows"]] == pytest.approx([0.9, 0.8, 0.5])
    assert [r["trainable_pct"] for r in out["rows"]] == [100.5, 1.1, 0.2]
    md = out["markdown"].splitlines()
    assert md[0].startswith("| variant | score | sentiment | wic |")
    assert md[3] == "| adapters (LoRA per task) | 0.800 | 0.800 | 0.800 | 1.10% | 1.1 MB |"
    assert "frozen features (concat_last_four)" in md[4]
