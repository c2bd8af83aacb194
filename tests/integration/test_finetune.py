"""Fine-tuning on small slices of the real built-in tasks, with a tiny random encoder.

Covers: all four task types through fit_multitask and predict_split, the finetune stage's outputs
(selection and gate scores on disjoint validation examples), feature_extraction and single_task
modes, a new task declared only in params, `bertops predict`.
"""

from __future__ import annotations

import json

import pytest
import torch

from bertops.config import load_params
from bertops.train.finetune import fit_multitask, predict_split
from tests.helpers import write_tiny_encoder

BUILTIN = ["sentiment", "topic", "wic", "code-entities", "define-qa"]
SMALL = {  # a few steps on a few examples: this checks the code path, not the model's quality
    "finetune.max_train_examples_per_task": 24, "finetune.max_eval_examples_per_task": 12,
    "finetune.batch_size": 8, "finetune.eval_batch_size": 16, "finetune.max_epochs": 2,
    "finetune.steps_per_epoch": 10, "finetune.head_learning_rate": 1e-3,
}


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    return write_tiny_encoder(tmp_path_factory.mktemp("encoder"))


def real_params(data_dir, tmp_path, **extra):
    overrides = {f"tasks.{t}.path": str(data_dir / "tasks" / t) for t in BUILTIN}
    overrides.update({"finetune.out_dir": str(tmp_path / "finetune"), **SMALL, **extra})
    return load_params("params.yaml", overrides)


@pytest.mark.slow
def test_finetune_stage_all_task_types(real_data_dir, tiny_encoder, tmp_path, monkeypatch):
    from bertops.model.multitask import MultiTaskModel
    from bertops.stages import finetune

    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    params = real_params(real_data_dir, tmp_path, **{"finetune.init_dir": str(tiny_encoder)})
    result = finetune.main(params)

    metrics = json.loads((tmp_path / "finetune" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == set(BUILTIN)
    for task, m in metrics["tasks"].items():  # each task's score is its declared metric
        assert m["score"] == m[params.tasks[task].metric], (task, m)
    assert metrics["score"] == pytest.approx(sum(m["score"] for m in metrics["tasks"].values()) / 5)
    assert metrics["train_examples"] == {t: 24 for t in BUILTIN}
    assert metrics["steps"] == 20 and len(metrics["history"]) == 2
    assert metrics["score"] == max(h["score"] for h in metrics["history"])  # best epoch kept
    assert (tmp_path / "finetune" / "logs" / "metrics.csv").exists()

    model_dir = tmp_path / "finetune" / "model"
    assert result["model_dir"] == str(model_dir)
    model = MultiTaskModel.from_pretrained(model_dir)
    assert set(model.tasks) == set(BUILTIN)
    assert model.tasks["code-entities"].labels[:3] == ["O", "B-class", "I-class"]

    # predict_split: prediction and gold in the same form, one per record
    expected_form = {"sentiment": str, "topic": str, "wic": str, "code-entities": list, "define-qa": str}
    for task in BUILTIN:
        pred, gold = predict_split(model_dir, params.tasks[task], "validation", task)
        n = sum(1 for line in open(real_data_dir / "tasks" / task / "validation.jsonl") if line.strip())
        assert len(pred) == len(gold) == n
        assert all(isinstance(p, expected_form[task]) for p in pred)
        if task in ("sentiment", "topic", "wic"):
            assert set(pred) <= set(model.tasks[task].labels) and set(gold) <= set(model.tasks[task].labels)
        if task == "code-entities":
            assert all(len(p) == len(g) for p, g in zip(pred, gold))
        if task == "define-qa":
            assert all(isinstance(g, list) and g for g in gold)
    # The kept epoch was chosen on the selection examples, the gate number is the kept model's score
    # on the gate examples: two disjoint parts of validation, each score recomputed from predictions.
    from bertops.tracking.registry import get_dotted
    from bertops.train.finetune import score_task, validation_parts

    pred, gold = predict_split(model_dir, params.tasks["wic"], "validation", "wic")
    records = [json.loads(line) for line in open(real_data_dir / "tasks/wic/validation.jsonl")]
    selection, gate = validation_parts(params, "wic", params.seed)
    assert len(selection) == len(gate) == 12 and not {r["id"] for r in selection} & {r["id"] for r in gate}
    for part, reported in ((selection, metrics["tasks"]["wic"]), (gate, metrics["gate"]["tasks"]["wic"])):
        ids = {r["id"] for r in part}
        idx = [i for i, r in enumerate(records) if r["id"] in ids]
        again = score_task(model.tasks["wic"], [pred[i] for i in idx], [gold[i] for i in idx])
        assert again == pytest.approx(reported)
    assert metrics["gate"]["examples"] == {t: 12 for t in BUILTIN}
    assert metrics["validation_examples"] == {t: 12 for t in BUILTIN}
    assert metrics["gate"]["score"] == pytest.approx(sum(m["score"] for m in metrics["gate"]["tasks"].values()) / 5)
    # the registry gate reads that number (params.yaml register.gate_metric)
    assert get_dotted(metrics, params.register_.gate_metric) == metrics["gate"]["score"]


@pytest.mark.slow
def test_feature_extraction_keeps_encoder_and_single_task_trains_each(real_data_dir, tiny_encoder, tmp_path):
    from safetensors.torch import load_file

    params = real_params(real_data_dir, tmp_path, **{"finetune.mode": "feature_extraction",
                                                    "finetune.feature_layers": "concat_last_four",
                                                    "finetune.max_epochs": 1})
    r = fit_multitask(params, str(tiny_encoder), tmp_path / "fe", seed=3, tasks=["code-entities", "define-qa"])
    before = load_file(str(tiny_encoder / "model.safetensors"))
    after = load_file(str(tmp_path / "fe" / "model" / "model.safetensors"))
    for k, v in before.items():
        torch.testing.assert_close(after[k], v)  # frozen encoder saved unchanged
    heads = load_file(str(tmp_path / "fe" / "model" / "heads.safetensors"))
    assert heads["heads.code-entities.1.weight"].shape == (15, 64)  # concat of the 2 layers of 32
    assert set(r["metrics"]) == {"code-entities", "define-qa"}

    params = real_params(real_data_dir, tmp_path, **{"finetune.mode": "single_task", "finetune.max_epochs": 1,
                                                    "finetune.encoder_dropout": 0.0})
    r = fit_multitask(params, str(tiny_encoder), tmp_path / "st", seed=3, tasks=["sentiment", "wic"])
    # the encoder trained (and is saved) with finetune.encoder_dropout, not its checkpoint's 0.1
    saved = json.loads((tmp_path / "st" / "model" / "wic" / "config.json").read_text())
    assert json.loads((tiny_encoder / "config.json").read_text())["hidden_dropout_prob"] == 0.1
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.0
    # one model per task under the same model dir the other modes use, routed by a manifest
    assert r["model_dir"] == str(tmp_path / "st" / "model")
    assert r["precision"] == "32-true"  # the stage records it in metrics.json for every mode
    assert r["model_dirs"] == {t: str(tmp_path / "st" / "model" / t) for t in ("sentiment", "wic")}
    assert set(r["gate"]["tasks"]) == {"sentiment", "wic"}
    from bertops.model.multitask import MultiTaskModel
    from bertops.train.finetune import task_model_dir

    assert list(MultiTaskModel.from_pretrained(r["model_dirs"]["wic"]).tasks) == ["wic"]
    assert task_model_dir(r["model_dir"], "wic") == tmp_path / "st" / "model" / "wic"
    pred, gold = predict_split(r["model_dir"], params.tasks["sentiment"], "validation", "sentiment")
    assert len(pred) == len(gold) and set(pred) <= {"rotten", "fresh"}


@pytest.mark.slow
def test_bf16_mixed_precision_all_task_types(real_data_dir, tiny_encoder, tmp_path):
    # bf16-mixed (what `precision: auto` picks on a GPU) on CPU, same autocast rules: every head and
    # loss works under bf16 autocast, and the saved weights stay fp32 (mixed precision keeps fp32
    # master weights).
    from safetensors.torch import load_file

    params = real_params(real_data_dir, tmp_path, **{"finetune.precision": "bf16-mixed", "finetune.max_epochs": 1})
    r = fit_multitask(params, str(tiny_encoder), tmp_path / "bf16", seed=3)
    assert r["precision"] == "bf16-mixed"
    assert set(r["metrics"]) == set(BUILTIN)
    assert all(m["score"] == m[params.tasks[t].metric] for t, m in r["metrics"].items())
    saved = load_file(str(tmp_path / "bf16" / "model" / "model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.float32}
    assert real_params(real_data_dir, tmp_path).finetune.precision == "32-true"


def test_new_task_declared_only_in_params(tiny_encoder, tmp_path, monkeypatch, capsys):
    """A made-up pair task with its own field names and labels trains with no code change."""
    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    data = tmp_path / "kinds"
    data.mkdir()
    # which kind of thing both sentences name: words of the two classes never overlap
    pairs = [("a cat", "the dog", "animal"), ("one cow", "a pig", "animal"), ("the hen", "a fox", "animal"),
             ("red paint", "blue sky", "colour"), ("green grass", "pink shirt", "colour"),
             ("grey stone", "a yellow sun", "colour")]
    for split in ("train", "validation", "test"):
        with open(data / f"{split}.jsonl", "w") as f:
            # validation is cut into selection and gate examples: 4 copies put every pair in both
            for i, (a, b, lab) in enumerate(pairs * (4 if split == "validation" else 2)):
                f.write(json.dumps({"id": f"{split}{i}", "left": a, "right": b, "verdict": lab}) + "\n")
    params = load_params("params.yaml", {
        "tasks.kinds": {"type": "pair_classification", "path": str(data), "text_fields": ["left", "right"],
                        "label_field": "verdict", "labels": ["animal", "colour"], "max_seq_length": 12},
        "finetune.tasks": ["kinds"], "finetune.max_epochs": 5, "finetune.steps_per_epoch": 10, "finetune.batch_size": 8,
        "finetune.learning_rate": 1e-3, "finetune.head_learning_rate": 1e-2, "finetune.warmup_ratio": 0.0,
        "finetune.out_dir": str(tmp_path / "ft"), "finetune.init_dir": str(tiny_encoder),
    })
    from bertops.stages import finetune

    result = finetune.main(params)
    assert result["tasks"]["kinds"] == 1.0 and result["gate_score"] == 1.0  # learns 6 pairs: it really trained
    pred, gold = predict_split(result["model_dir"], params.tasks["kinds"], "test", "kinds")
    assert pred == gold == [p[2] for p in pairs * 2]

    # and `bertops predict` serves it
    from bertops.cli import main

    capsys.readouterr()  # drop the training progress bar
    assert main(["predict", result["model_dir"], "kinds", "a cat|||the dog", "red paint|||blue sky"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["animal", "colour"]


def test_predict_cli_all_types(tiny_encoder, tmp_path, capsys, monkeypatch):
    """`bertops predict` prints one line per input for each task type, reads stdin, reports errors."""
    import io

    from bertops.cli import main
    from bertops.config import TaskParams
    from bertops.data.tasks import TaskSpec
    from bertops.model.multitask import MultiTaskModel

    specs = [
        TaskSpec.from_params("sent", TaskParams(type="sequence_classification", path="x", text_fields=["text"],
                                                labels=["rotten", "fresh"])),
        TaskSpec.from_params("pair", TaskParams(type="pair_classification", path="x", text_fields=["a", "b"],
                                                labels=[False, True])),
        TaskSpec.from_params("ner", TaskParams(type="token_classification", path="x", labels=["class"])),
        TaskSpec.from_params("qa", TaskParams(type="extractive_qa", path="x", max_seq_length=32, doc_stride=8)),
    ]
    model_dir = tmp_path / "model"
    MultiTaskModel.build(tiny_encoder, specs).save_pretrained(model_dir)

    assert main(["predict", str(model_dir), "sent", "a fine film", "dull"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in ("rotten", "fresh") and "fresh=" in lines[0]

    assert main(["predict", str(model_dir), "ner", "use QuerySet now"]) == 0
    words = capsys.readouterr().out.split()
    assert [w.split("/")[0] for w in words] == ["use", "QuerySet", "now"]
    assert all(w.split("/")[1] in ("O", "B-class", "I-class") for w in words)

    context = "the answer is here in this short context"
    assert main(["predict", str(model_dir), "qa", f"where?|||{context}"]) == 0
    out = capsys.readouterr().out
    answer = eval(out.split("\t")[0])  # printed with repr
    assert answer in context and "score=" in out

    lines = json.dumps({"a": "x", "b": "y"}) + "\n" + json.dumps(["p", "q"]) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["predict", str(model_dir), "pair"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2

    assert main(["predict", str(model_dir), "nope", "x"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["predict", str(model_dir), "pair", "no separator"]) == 2
    assert main(["predict", str(tmp_path / "missing"), "sent", "x"]) == 2
