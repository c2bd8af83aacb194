"""finetune.mode adapters, model side: one LoRA adapter (peft) per task on a shared encoder, saved
per task in peft's format next to the base encoder, reloaded to the same answers."""

from __future__ import annotations

import json

import pytest
import torch

from bertops.data.tasks import TaskSpec
from bertops.model.multitask import MultiTaskModel, encode
from bertops.model.multitask import adapters as A
from tests.unit.test_batched_predict import SPECS, build

SETTINGS = A.settings_dict(rank=4, alpha=8, dropout=0.0, target_modules=["query", "value", "dense"])


@pytest.fixture(scope="module")
def adapter_model(encoder_dir):
    return build(encoder_dir, 3, adapters=SETTINGS)  # every weight redrawn, LoRA B included


def _batch(model, task, texts):
    spec = model.tasks[task]
    return model.collate(encode(model.tokenizer, spec, texts))


def test_one_adapter_per_task_switched_by_forward(adapter_model, encoder_dir):
    model = adapter_model
    names = [s.name for s in SPECS]
    assert sorted(model.encoder.peft_config) == sorted(names)
    # every LoRA parameter belongs to one task's adapter; the base encoder is frozen
    lora = {k for k, _ in model.named_parameters() if A.is_adapter_param(k)}
    assert lora and {A.adapter_task(k) for k in lora} == set(names)
    base = [p for k, p in model.encoder.named_parameters() if not A.is_adapter_param("." + k)]
    assert base and not any(p.requires_grad for p in base)
    # the same input through two tasks' adapters gives two different encodings
    spec = next(s for s in SPECS if s.type == "sequence_classification")
    b = _batch(model, spec.name, ["a warm, clever film"])
    with torch.no_grad():
        model.encoder.set_adapter(names[0])
        h0 = model.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        model(spec.name, b["input_ids"], b["attention_mask"], b["token_type_ids"])  # activates spec's own
        h1 = model.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    assert (spec.name == names[0]) == torch.equal(h0, h1)


def test_save_per_task_adapters_and_reload_same_predictions(adapter_model, tmp_path):
    from safetensors.torch import load_file

    model = adapter_model
    model.save_pretrained(tmp_path / "m")
    for spec in SPECS:
        d = tmp_path / "m" / A.ADAPTERS_DIR / spec.name
        assert {p.name for p in d.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", A.HEAD_NAME}
        assert json.loads((d / "adapter_config.json").read_text())["r"] == 4
        head = load_file(str(d / A.HEAD_NAME))
        assert head and all(k.startswith(f"heads.{spec.name}.") for k in head)
    # the shared encoder is a plain BertModel: no LoRA tensor, no peft names
    base = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert not [k for k in base if "lora" in k or "base_layer" in k]
    again = MultiTaskModel.from_pretrained(tmp_path / "m")
    assert again.adapters == SETTINGS
    for spec in SPECS:
        inputs = {"sequence_classification": ["a warm film", "dull and long"],
                  "pair_classification": [("the cat sat", "a cat sat"), ("red car", "blue sky")],
                  "token_classification": [["use", "QuerySet", "here"]],
                  "extractive_qa": [("who did?", "Ann did it, on a Tuesday.")]}[spec.type]
        features = encode(model.tokenizer, spec, inputs)
        for x, y in zip(model.logits(spec.name, features), again.logits(spec.name, features)):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_adapters_refuse_a_shared_trainable_layer_mix(encoder_dir):
    from bertops.errors import BertopsError

    with pytest.raises(BertopsError, match="feature_layers"):
        MultiTaskModel.build(encoder_dir, [TaskSpec.from_dict(SPECS[0].to_dict())], adapters=SETTINGS,
                             feature_layers="weighted_sum")


def test_target_modules_that_match_no_layer_are_a_user_error(encoder_dir):
    from bertops.errors import BertopsError

    with pytest.raises(BertopsError, match="target_modules"):
        MultiTaskModel.build(encoder_dir, [TaskSpec.from_dict(SPECS[0].to_dict())],
                             adapters={**SETTINGS, "target_modules": ["no_such_layer"]})


def test_modules_to_save_give_each_task_its_own_pooler(encoder_dir, tmp_path):
    from safetensors.torch import load_file

    from bertops.train.adapters import parameter_costs

    settings = {**SETTINGS, "modules_to_save": ["pooler"]}
    model = build(encoder_dir, 4, adapters=settings)  # every copy redrawn: the tasks' poolers differ
    model.save_pretrained(tmp_path / "m")
    base = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert "pooler.dense.weight" in base and not [k for k in base if "original_module" in k or "modules_to_save" in k]
    for spec in SPECS:
        own = load_file(str(tmp_path / "m" / A.ADAPTERS_DIR / spec.name / "adapter_model.safetensors"))
        assert any("pooler" in k for k in own), spec.name
    costs = parameter_costs(model, tmp_path / "m", "adapters")
    own_pooler = {A.adapter_task(k) for k, _ in model.named_parameters() if ".modules_to_save." in k}
    assert own_pooler == {s.name for s in SPECS}  # counted in each task's trainable parameters
    plain = parameter_costs(build(encoder_dir, 4, adapters=SETTINGS), tmp_path / "m", "adapters")
    assert all(costs["tasks"][t]["trainable_params"] > plain["tasks"][t]["trainable_params"] for t in costs["tasks"])
    again = MultiTaskModel.from_pretrained(tmp_path / "m")
    spec = next(s for s in SPECS if s.type == "sequence_classification")
    features = encode(model.tokenizer, spec, ["a warm film", "dull and long"])
    for x, y in zip(model.logits(spec.name, features), again.logits(spec.name, features)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("pooling, copies", [("cls", ["pooler"]), ("mean", [])])
def test_mean_pooling_gives_no_task_a_pooler_copy_it_would_never_train(pooling, copies):
    from bertops.config import FinetuneParams
    from bertops.train.adapters import adapter_settings

    ft = FinetuneParams(mode="adapters", pooling=pooling)
    assert ft.adapters.modules_to_save == ["pooler"]
    assert adapter_settings(ft)["modules_to_save"] == copies


def test_adapters_and_heads_train_at_the_adapters_rate_and_the_base_not_at_all(encoder_dir):
    # the heads' head_learning_rate is full fine-tuning's; at it the adapters row's token head stayed
    # on the `O` prior (code entities F1 0), so in adapters mode every trained parameter takes the
    # adapters' rate (the rate evaluate.adapters_lr_grid chooses)
    from bertops.config import FinetuneParams
    from bertops.train.finetune_module import param_groups

    model = build(encoder_dir, 3, adapters=SETTINGS)
    ft = FinetuneParams(mode="adapters", head_learning_rate=2e-3, adapters={"learning_rate": 1e-2})
    groups = param_groups(model, ft)
    assert {g["lr"] for g in groups} == {1e-2}
    grouped = {id(p) for g in groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in grouped}
    assert {n for n, p in model.named_parameters() if n.startswith("heads.")} <= names
    assert any(A.is_adapter_param(n) for n in names)
    assert all(A.is_adapter_param(n) or not n.startswith("encoder.") for n in names)  # no base weight
