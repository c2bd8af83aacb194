"""Multi-task model: layer combinations, frozen encoder, losses, task sampler, save/load round trip."""

from __future__ import annotations

import collections
import json
import shutil

import pytest
import torch

from bertops.config import TaskParams
from bertops.data import tasks as T
from bertops.model.multitask import FEATURE_LAYERS, HEADS_NAME, MultiTaskModel, collate
from bertops.train.finetune import MultiTaskBatches, task_sampling_probs

TASK_PARAMS = {
    "sent": TaskParams(type="sequence_classification", path="x", text_fields=["text"], labels=["neg", "pos"],
                       max_seq_length=16),
    "pair": TaskParams(type="pair_classification", path="x", text_fields=["a", "b"], labels=[False, True],
                       max_seq_length=16),
    "ner": TaskParams(type="token_classification", path="x", labels=["class"], max_seq_length=16),
    "qa": TaskParams(type="extractive_qa", path="x", max_seq_length=24, doc_stride=8, max_answer_length=4),
}
SPECS = [T.TaskSpec.from_params(n, tp) for n, tp in TASK_PARAMS.items()]
INPUTS = {
    "sent": ["a fine film", "dull and long"],
    "pair": [("the cat sat", "a cat sat"), ("x", "y")],
    "ner": [["use", "QuerySet", "here"], "Model objects"],
    "qa": [("what?", "one two three four five six seven eight nine ten eleven twelve thirteen"),
           ("who?", "Ann did")],
}


def _batch(model, task):
    spec = model.tasks[task]
    inputs = [T.normalize_input(spec, x) for x in INPUTS[task]]
    return collate(T.encode(model.tokenizer, spec, inputs), model.tokenizer.pad_token_id)


@pytest.mark.parametrize("mode", FEATURE_LAYERS)
def test_layer_combination_shapes(encoder_dir, mode):
    model = MultiTaskModel.build(encoder_dir, SPECS, feature_layers=mode, freeze_encoder=True)
    b = _batch(model, "ner")
    out = model.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
    feats = model.combiner(out.last_hidden_state, out.hidden_states)
    width = 32 * 2 if mode == "concat_last_four" else 32  # a 2-layer encoder has only 2 layers to concat
    assert feats.shape == (*b["input_ids"].shape, width) == (*b["input_ids"].shape, model.combiner.out_dim)
    expected = {"last": out.hidden_states[-1], "second_to_last": out.hidden_states[-2],
                "sum_last_four": out.hidden_states[1] + out.hidden_states[2]}
    if mode in expected:
        torch.testing.assert_close(feats, expected[mode])
    if mode == "weighted_sum":  # zero init = equal softmax weights over embeddings + 2 layers
        torch.testing.assert_close(feats, torch.stack(out.hidden_states).mean(0))
    logits = model("ner", b["input_ids"], b["attention_mask"], b["token_type_ids"])
    assert logits.shape == (*b["input_ids"].shape, 3)


def test_feature_extraction_trains_heads_and_layer_mix_only(encoder_dir):
    model = MultiTaskModel.build(encoder_dir, SPECS, feature_layers="weighted_sum", freeze_encoder=True)
    model.train()
    assert not model.encoder.training  # frozen encoder: no dropout
    b = _batch(model, "sent")
    b["labels"] = torch.tensor([0, 1])
    loss = model.loss(model.tasks["sent"], model("sent", b["input_ids"], b["attention_mask"], b["token_type_ids"]), b)
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.combiner.layer_weights.grad is not None and model.pooler.dense.weight.grad is not None
    assert model.heads["sent"][1].weight.grad is not None


@pytest.mark.parametrize("random_init", [False, True])
def test_encoder_dropout_replaces_the_checkpoints(encoder_dir, random_init):
    def rates(model):
        return {m.p for m in model.encoder.modules() if isinstance(m, torch.nn.Dropout)}

    assert rates(MultiTaskModel.build(encoder_dir, SPECS, random_init=random_init)) == {0.1}  # config.json's
    model = MultiTaskModel.build(encoder_dir, SPECS, random_init=random_init, encoder_dropout=0.0)
    assert rates(model) == {0.0}
    assert model.encoder.config.hidden_dropout_prob == model.encoder.config.attention_probs_dropout_prob == 0.0


def test_finetune_mode_uses_encoder_pooler_and_updates_encoder(encoder_dir):
    model = MultiTaskModel.build(encoder_dir, SPECS)
    assert model.use_encoder_pooler and model.pooler is None
    b = _batch(model, "pair")
    b["labels"] = torch.tensor([1, 0])
    logits = model("pair", b["input_ids"], b["attention_mask"], b["token_type_ids"])
    model.loss(model.tasks["pair"], logits, b).backward()
    assert model.encoder.pooler.dense.weight.grad is not None
    assert model.encoder.embeddings.word_embeddings.weight.grad is not None


def test_mean_pooling_heads_read_the_mean_of_real_tokens_and_survive_save_load(encoder_dir, tmp_path):
    model = MultiTaskModel.build(encoder_dir, SPECS, pooling="mean").eval()
    assert not model.use_encoder_pooler and model.pooler is None
    b = _batch(model, "pair")  # two pairs of different lengths: the shorter one is padded
    assert (b["attention_mask"] == 0).any()
    with torch.no_grad():
        logits = model("pair", b["input_ids"], b["attention_mask"], b["token_type_ids"])
        hidden = model.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                               token_type_ids=b["token_type_ids"]).last_hidden_state
        for i in range(2):  # each row: the head on the mean over its own real tokens only
            real = b["attention_mask"][i].bool()
            torch.testing.assert_close(logits[i], model.heads["pair"](hidden[i, real].mean(0)))
    model.save_pretrained(tmp_path / "m")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "m")
    assert loaded.pooling == "mean"
    assert loaded.predict("sent", INPUTS["sent"]) == model.predict("sent", INPUTS["sent"])
    with pytest.raises(ValueError, match="pooling"):
        MultiTaskModel.build(encoder_dir, SPECS, pooling="max")


def test_losses_ignore_unlabelled_tokens_and_clamp_qa_positions(encoder_dir):
    model = MultiTaskModel.build(encoder_dir, SPECS)
    spec = model.tasks["ner"]
    logits = torch.zeros(1, 3, 3)
    logits[0, 1, 1] = 10.0  # confident and right on the only labelled token
    logits[0, 2, 2] = -10.0  # wildly wrong on a token labelled -100
    loss = model.loss(spec, logits, {"labels": torch.tensor([[-100, 1, -100]])})
    assert loss.item() < 1e-3
    qa_logits = torch.zeros(1, 4, 2)
    loss = model.loss(model.tasks["qa"], qa_logits, {"start_positions": torch.tensor([9]),
                                                     "end_positions": torch.tensor([9])})
    assert torch.isfinite(loss) and abs(loss.item() - torch.log(torch.tensor(4.0)).item()) < 1e-5


def test_sampling_probabilities():
    sizes = {"big": 900, "small": 100}
    assert task_sampling_probs(sizes, "proportional") == pytest.approx({"big": 0.9, "small": 0.1})
    assert task_sampling_probs(sizes, "temperature", 1.0) == pytest.approx({"big": 0.9, "small": 0.1})
    assert task_sampling_probs(sizes, "temperature", 2.0) == pytest.approx({"big": 30 / 40, "small": 10 / 40})
    assert task_sampling_probs(sizes, "uniform") == pytest.approx({"big": 0.5, "small": 0.5})
    high_t = task_sampling_probs(sizes, "temperature", 1e6)
    assert high_t["small"] == pytest.approx(0.5, abs=1e-3)
    assert task_sampling_probs({"a": 5, "empty": 0}, "uniform") == {"a": 1.0, "empty": 0.0}


@pytest.mark.parametrize("strategy,temperature", [("proportional", 1.0), ("temperature", 3.0), ("uniform", 1.0)])
def test_batches_follow_sampling_probabilities(strategy, temperature):
    feats = {t: [{"input_ids": [101, i, 102], "token_type_ids": [0] * 3, "attention_mask": [1] * 3,
                  "labels": 0} for i in range(n)] for t, n in {"a": 800, "b": 150, "c": 50}.items()}
    probs = task_sampling_probs({t: len(f) for t, f in feats.items()}, strategy, temperature)
    ds = MultiTaskBatches(feats, batch_size=4, probs=probs, steps_per_epoch=3000, seed=7)
    counts = collections.Counter()
    seen_b = set()
    for batch in ds:
        counts[batch["task"]] += 1
        assert batch["input_ids"].shape == (4, 3)
        if batch["task"] == "b":
            seen_b.update(batch["input_ids"][:, 1].tolist())
    assert sum(counts.values()) == len(ds) == 3000
    for t, p in probs.items():
        assert counts[t] / 3000 == pytest.approx(p, abs=0.03)
    assert seen_b == set(range(150))  # a task's examples are all used before any repeats
    ds2 = MultiTaskBatches(feats, batch_size=4, probs=probs, steps_per_epoch=3000, seed=7)
    assert ds2.task_sequence(0) == ds.task_sequence(0) != ds.task_sequence(1)


def test_save_load_round_trip_predicts_identically(encoder_dir, tmp_path):
    model = MultiTaskModel.build(encoder_dir, SPECS, feature_layers="weighted_sum", freeze_encoder=False)
    with torch.no_grad():  # a layer mix that differs from its initial value must survive the trip
        model.combiner.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
        model.combiner.gamma.fill_(1.7)
    before = {t: model.predict(t, INPUTS[t]) for t in INPUTS}
    model.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "model.safetensors", HEADS_NAME, "multitask_config.json", "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".ckpt")) for f in files)  # no pickle
    loaded = MultiTaskModel.from_pretrained(tmp_path / "m")
    after = {t: loaded.predict(t, INPUTS[t]) for t in INPUTS}
    assert before == after
    assert [p["label"] for p in after["sent"]] and set(after["sent"][0]["scores"]) == {"neg", "pos"}
    assert after["ner"][1]["tokens"] == ["Model", "objects"] and len(after["ner"][1]["tags"]) == 2
    ctx = INPUTS["qa"][0][1]
    assert after["qa"][0]["answer"] == ctx[after["qa"][0]["start"]:after["qa"][0]["end"]]
    torch.testing.assert_close(loaded.combiner.layer_weights, torch.tensor([0.5, -1.0, 2.0]))
    one = loaded.predict_one("pair", "the cat sat", "a cat sat")
    # alone vs in a padded batch of two: the same number up to float32 summation order
    assert one["prediction"] == after["pair"][0]["label"]
    assert one["score"] == pytest.approx(after["pair"][0]["score"], abs=1e-6)
    assert loaded.predict_one("ner", "use QuerySet here")["prediction"] == " ".join(after["ner"][0]["tags"])


def test_unknown_task_is_a_user_error(encoder_dir):
    from bertops.errors import BertopsError

    model = MultiTaskModel.build(encoder_dir, SPECS)
    with pytest.raises(BertopsError, match="unknown task"):
        model.predict("nope", ["x"])


def test_saved_model_serves_from_the_package_alone_without_bertops(encoder_dir, tmp_path):
    """The MLflow pyfunc ships the multitask package directory alone (code_paths): it must load
    and predict, every task type, with no bertops, Lightning or datasets importable."""
    import subprocess
    import sys
    from pathlib import Path

    import bertops.model.multitask as mt

    model = MultiTaskModel.build(encoder_dir, SPECS)
    model.save_pretrained(tmp_path / "m")
    expected = {t: model.predict(t, INPUTS[t]) for t in INPUTS}
    expected["qa_flat"] = model.predict_one("qa", *INPUTS["qa"][0])
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    shutil.copytree(Path(mt.__file__).parent, code_dir / "multitask", ignore=shutil.ignore_patterns("__pycache__"))
    script = f"""
import json, sys
for name in ("bertops", "lightning", "datasets", "mlflow", "seqeval"):
    sys.modules[name] = None  # importing them now raises ImportError
sys.path.insert(0, {str(code_dir)!r})
import multitask
m = multitask.MultiTaskModel.from_pretrained({str(tmp_path / "m")!r})
inputs = {INPUTS!r}
out = {{t: m.predict(t, inputs[t]) for t in inputs}}
out["qa_flat"] = m.predict_one("qa", *inputs["qa"][0])
assert not [k for k, v in sys.modules.items() if k.startswith("bertops") and v is not None]
print(json.dumps(out))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert _rounded(got) == _rounded(json.loads(json.dumps(expected)))  # labels, tags, spans; scores to 1e-5


def _rounded(x):
    if isinstance(x, float):
        return round(x, 5)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x
