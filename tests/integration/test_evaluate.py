"""The evaluate stage on the real task data, with a tiny encoder really fine-tuned (a few steps):
the pipeline model, each encoder's learning rate chosen on validation (the test split unread until
then), the seeds at that rate, random-init, majority and TF-IDF baselines, the bootstrap verdict,
metrics.json/report.md/plots, and the MLflow run."""

import collections
import json

import pytest

from bertops.config import load_params

TASKS = ["sentiment", "topic", "wic", "code-entities", "define-qa"]


def _tiny_encoder(out_dir, data_dir):
    """A 1-layer H32 BERT with a 1,500-piece WordPiece trained on task texts (weights untrained:
    the test checks the plumbing, not that pretraining helps)."""
    from transformers import BertConfig, BertForPreTraining

    from bertops.io import read_jsonl
    from bertops.text.tokenizer import save_tokenizer, train_wordpiece

    def texts():
        for task, fields in (("sentiment", ["text"]), ("topic", ["text"]), ("wic", ["sentence1", "sentence2"]),
                             ("define-qa", ["question", "context"])):
            for i, rec in enumerate(read_jsonl(data_dir / "tasks" / task / "train.jsonl")):
                if i >= 300:
                    break
                yield from (rec[f] for f in fields)
        for i, rec in enumerate(read_jsonl(data_dir / "tasks" / "code-entities" / "train.jsonl")):
            if i >= 300:
                break
            yield " ".join(rec["tokens"])

    tok = train_wordpiece(texts, vocab_size=1500)
    save_tokenizer(tok, out_dir)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertForPreTraining(config).save_pretrained(out_dir)
    return out_dir


@pytest.mark.slow
def test_evaluate_stage_on_real_data(tmp_path, real_data_dir, monkeypatch):
    from bertops.data import tasks as T
    from bertops.stages import evaluate
    from bertops.train import finetune
    from bertops.train.finetune import fit_multitask, predict_split

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BERTOPS_TRACKING", "on")
    monkeypatch.chdir(tmp_path)
    encoder = _tiny_encoder(tmp_path / "pretrain" / "model", real_data_dir)
    overrides = {f"tasks.{t}.path": str(real_data_dir / "tasks" / t) for t in TASKS}
    overrides.update({
        "seed": 11,
        "finetune.init_dir": str(encoder), "finetune.out_dir": str(tmp_path / "finetune"),
        "finetune.mode": "finetune", "finetune.tasks": TASKS,
        "finetune.max_train_examples_per_task": 48, "finetune.max_eval_examples_per_task": 24,
        "finetune.batch_size": 16, "finetune.max_epochs": 2, "finetune.max_steps": -1,
        "finetune.steps_per_epoch": 5, "evaluate.max_steps": None,
        "evaluate.out_dir": str(tmp_path / "evaluate"), "evaluate.model_dir": str(tmp_path / "finetune" / "model"),
        "evaluate.pretrain_dir": str(encoder), "evaluate.seeds": [11, 12],
        "evaluate.baselines": ["majority", "random_init", "tfidf"], "evaluate.max_test_examples_per_task": 40,
        "evaluate.lr_grid": [1e-3, 5e-3], "evaluate.lr_seeds": 2, "evaluate.bootstrap_samples": 300,
        "evaluate.modes": [],  # the fine-tuning-variant rows: tests/integration/test_eval_modes.py
        "evaluate.jobs": 1,  # fits in this process, where the spies below see them (jobs 2: at the end)
    })
    params = load_params(_repo_params(), overrides)
    # the pipeline's model, as the finetune stage makes it (seed = top-level seed, CSV log in out_dir)
    fit_multitask(params, str(encoder), tmp_path / "finetune", params.seed)

    # spies: every split read (by the stage or by fine-tuning) and every fine-tuning with its result
    events = []
    real_load = T.load_records

    def load_records(tp, split, name="task"):
        events.append(("read", split, name))
        return real_load(tp, split, name)

    def fit_spy(p, init_dir, out_dir, seed, **kw):
        res = fit_multitask(p, init_dir, out_dir, seed, **kw)
        events.append(("fit", "random_init" if kw.get("random_init") else "pretrained", seed,
                        p.finetune.learning_rate, res["gate"]["score"],
                        {t: g["score"] for t, g in res["gate"]["tasks"].items()}))
        return res

    monkeypatch.setattr(T, "load_records", load_records)
    monkeypatch.setattr(evaluate, "load_records", load_records)
    monkeypatch.setattr(finetune, "fit_multitask", fit_spy)

    result = evaluate.main(params)

    out = tmp_path / "evaluate"
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) >= {"pipeline", "pretrained", "random_init", "majority", "mean_score", "verdict"}
    assert m["pretrained"]["sentiment"]["accuracy"]["n"] == 2 and m["random_init"]["topic"]["score"]["n"] == 2
    assert m["majority"]["wic"]["accuracy"]["n"] == 1
    assert m["n_examples"] == {t: 40 for t in TASKS}
    # each encoder's rate: every grid rate fine-tuned at both seeds (evaluate.lr_seeds 2); the best mean
    # validation (gate) score chose it; the chosen rate's runs are the seeds' runs (no fit after the
    # grid); the test split was first read after the last fit
    fits = [e for e in events if e[0] == "fit"]
    for enc in ("pretrained", "random_init"):
        assert sorted((e[2], e[3]) for e in fits if e[1] == enc) == [(11, 1e-3), (11, 5e-3), (12, 1e-3), (12, 5e-3)]
        grid = {lr: sum(e[4] for e in fits if e[1] == enc and e[3] == lr) / 2 for lr in (1e-3, 5e-3)}
        sel = m["lr_selection"][enc]
        assert sel["chosen"] == max(grid, key=lambda lr: (grid[lr], -lr))
        assert {g["lr"]: g["validation_score"] for g in sel["grid"]} == pytest.approx(grid)
        # evaluate.lr_choice task (default): each task's rate is its own best mean gate score (ties:
        # the encoder's rate)
        for t in TASKS:
            by_lr = {lr: sum(e[5][t] for e in fits if e[1] == enc and e[3] == lr) / 2 for lr in (1e-3, 5e-3)}
            assert sel["tasks"][t]["lr"] == max(by_lr, key=lambda lr: (by_lr[lr], lr == sel["chosen"]))
    first_test = next(i for i, e in enumerate(events) if e[0] == "read" and e[1] == "test")
    last_fit = max(i for i, e in enumerate(events) if e[0] == "fit")
    assert first_test > last_fit
    assert {e[1] for e in events[:first_test] if e[0] == "read"} == {"train", "validation"}
    # the verdict: paired bootstrap difference = difference of the means, outcome from its interval
    v = m["verdict"]
    for t in TASKS:
        vt, pre, rnd = v["tasks"][t], m["pretrained"][t]["score"], m["random_init"][t]["score"]
        assert vt["difference"] == pytest.approx(pre["mean"] - rnd["mean"])
        assert vt["ci_low"] <= vt["difference"] <= vt["ci_high"]
        assert vt["outcome"] == ("win" if vt["ci_low"] > 0 else "loss" if vt["ci_high"] < 0 else "tie")
    assert [v["wins"], v["ties"], v["losses"]] == [sum(x["outcome"] == o for x in v["tasks"].values())
                                                   for o in ("win", "tie", "loss")]
    assert v["mean_score"]["difference"] == pytest.approx(
        m["pretrained"]["mean_score"]["mean"] - m["random_init"]["mean_score"]["mean"])
    # TF-IDF: classification tasks only, C from validation
    assert set(m["tfidf"]) == {"sentiment", "topic", "wic"} and set(m["tfidf_selection"]) == set(m["tfidf"])

    # scored on the first 40 test records, as predict_split sees them
    pred, gold = predict_split(tmp_path / "finetune" / "model", params.tasks["sentiment"], "test", "sentiment")
    idx = evaluate.sample_indices(len(gold), 40, "sentiment")
    acc = sum(pred[i] == gold[i] for i in idx) / 40
    assert m["pipeline"]["sentiment"]["accuracy"]["mean"] == pytest.approx(acc)
    # majority: the most frequent train label, scored on the test slice
    from bertops.io import read_jsonl

    train = collections.Counter(r["label"] for r in read_jsonl(real_data_dir / "tasks/topic/train.jsonl"))
    top = train.most_common(1)[0][0]
    test = [r["label"] for r in read_jsonl(real_data_dir / "tasks/topic/test.jsonl")]
    test = [test[i] for i in evaluate.sample_indices(len(test), 40, "topic")]
    assert m["majority"]["topic"]["accuracy"]["mean"] == pytest.approx(test.count(top) / 40)
    assert m["majority"]["code-entities"]["f1"]["mean"] == 0.0
    assert result["mean_score"] == m["mean_score"] == pytest.approx(m["pipeline"]["mean_score"]["mean"])

    md = (out / "report.md").read_text()
    for row in ("| pipeline model |", "| pretrained |", "| random-init |", "| majority |",
                "| tf-idf + logreg |", "| encoder | lr 0.001 | lr 0.005 | chosen |", "| **mean score** |"):
        assert row in md
    assert "seed 11 is the pipeline model itself" not in md  # seed 11 is the grid's run
    plots = out / "plots"
    for t in ("sentiment", "topic", "wic"):
        assert (plots / f"confusion_{t}.png").stat().st_size > 1000
        assert len(json.loads((plots / f"confusion_{t}.json").read_text())) == 40
    for t in TASKS:
        assert (plots / f"curves_{t}.png").stat().st_size > 1000
        runs = {line.split(",")[0] for line in (plots / f"curves_{t}.csv").read_text().splitlines()[1:]}
        assert runs == {"pretrained seed 11", "pretrained seed 12", "random_init seed 11", "random_init seed 12"}

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["bertops"], filter_string="tags.`bertops.stage` = 'evaluate'")
    assert len(runs) == 1
    assert runs["metrics.mean_score"][0] == pytest.approx(m["mean_score"])
    assert runs["metrics.random_init.sentiment.accuracy.mean"][0] == pytest.approx(
        m["random_init"]["sentiment"]["accuracy"]["mean"])
    assert runs["metrics.verdict.mean_score.difference"][0] == pytest.approx(v["mean_score"]["difference"])
    assert runs["tags.bertops.pretraining_helps.sentiment"][0] == v["tasks"]["sentiment"]["outcome"]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["run_id"][0], "evaluate")}
    assert {"evaluate/report.md", "evaluate/metrics.json", "evaluate/plots"} <= arts

    # the same stage with its fits in 2 worker processes (1 thread each): none in this process, and
    # the same rates chosen and the same scores (the same seeds and data; tiny matmuls round alike)
    import torch

    if torch.get_num_threads() < 2:
        return
    n_events = len(events)
    evaluate.run(load_params(_repo_params(), {**overrides, "evaluate.jobs": 2,
                                               "evaluate.out_dir": str(tmp_path / "evaluate-jobs2")}))
    assert not [e for e in events[n_events:] if e[0] == "fit"]
    m2 = json.loads((tmp_path / "evaluate-jobs2" / "metrics.json").read_text())
    for enc in ("pretrained", "random_init"):
        sel, sel2 = m["lr_selection"][enc], m2["lr_selection"][enc]
        assert sel2["chosen"] == sel["chosen"]
        scores = [g["validation_score"] for g in sel["grid"]]
        assert [g["validation_score"] for g in sel2["grid"]] == pytest.approx(scores)
        for t in TASKS:
            assert m2[enc][t]["score"] == pytest.approx(m[enc][t]["score"])
    assert m2["verdict"]["mean_score"]["difference"] == pytest.approx(v["mean_score"]["difference"])


def _repo_params():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "params.yaml"
