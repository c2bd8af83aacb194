"""The evaluate stage on the real task data, with a tiny encoder really fine-tuned (a few steps):
the pipeline model, the pretrained encoder re-fine-tuned at a second seed, random-init and majority
baselines, metrics.json/report.md/plots, and the MLflow run."""

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
    from bertops.stages import evaluate
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
        "evaluate.baselines": ["majority", "random_init"], "evaluate.max_test_examples_per_task": 40,
    })
    params = load_params(_repo_params(), overrides)
    # the pipeline's model, as the finetune stage makes it (seed = top-level seed, CSV log in out_dir)
    fit_multitask(params, str(encoder), tmp_path / "finetune", params.seed)

    result = evaluate.main(params)

    out = tmp_path / "evaluate"
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) >= {"pipeline", "pretrained", "random_init", "majority", "mean_score", "verdict"}
    assert m["pretrained"]["sentiment"]["accuracy"]["n"] == 2 and m["random_init"]["topic"]["score"]["n"] == 2
    assert m["majority"]["wic"]["accuracy"]["n"] == 1
    assert m["n_examples"] == {t: 40 for t in TASKS}
    for t in TASKS:
        # the verdict follows from the aggregates by its rule (gain over the seed spread, above majority)
        v, pre, rnd = m["verdict"][t], m["pretrained"][t]["score"], m["random_init"][t]["score"]
        assert v["difference"] == pytest.approx(pre["mean"] - rnd["mean"])
        assert v["max_std"] == pytest.approx(max(pre["std"], rnd["std"]))
        assert v["above_majority"] == (pre["mean"] > m["majority"][t]["score"]["mean"])
        helps = v["difference"] > v["max_std"] and v["above_majority"]
        assert v["pretrained_beats_random"] == ("yes" if helps else "no")
        # the pipeline model is the pretrained run at seed 11: it lies within the two runs
        s = m["pretrained"][t]["score"]
        assert abs(m["pipeline"][t]["score"]["mean"] - s["mean"]) <= s["std"] + 1e-9

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
    for row in ("| pipeline model |", "| pretrained |", "| random-init |", "| majority |"):
        assert row in md
    assert "seed 11 is the pipeline model itself" in md
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
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["run_id"][0], "evaluate")}
    assert {"evaluate/report.md", "evaluate/metrics.json", "evaluate/plots"} <= arts


def _repo_params():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "params.yaml"
