"""finetune.mode adapters on small slices of the real tasks, tiny random encoder: only the adapters
and heads train (the base encoder's saved weights are bit-identical to the ones it started from),
each task's adapter is saved on its own, the reloaded model scores the gate examples exactly as the
in-memory model did, and finetune's metrics.json reports trainable parameters and bytes per task."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import write_tiny_encoder
from tests.integration.test_finetune import real_params

TASKS = ["sentiment", "wic", "code-entities", "define-qa"]  # the four task types


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return write_tiny_encoder(tmp_path_factory.mktemp("encoder"))  # 128 positions: the tasks' lengths


@pytest.mark.slow
def test_adapters_mode_trains_only_adapters_and_heads(real_data_dir, encoder_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from bertops.model.multitask import MultiTaskModel
    from bertops.model.multitask import adapters as A
    from bertops.stages import finetune
    from bertops.train.finetune import predict_split, score_task, validation_parts

    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    params = real_params(real_data_dir, tmp_path, **{
        "finetune.init_dir": str(encoder_dir), "finetune.mode": "adapters", "finetune.tasks": TASKS,
        "finetune.adapters.rank": 4, "finetune.max_epochs": 1})
    finetune.main(params)
    model_dir = tmp_path / "finetune" / "model"
    metrics = json.loads((tmp_path / "finetune" / "metrics.json").read_text())
    assert metrics["mode"] == "adapters" and metrics["steps"] == 10

    before = load_file(str(encoder_dir / "model.safetensors"))
    after = load_file(str(model_dir / "model.safetensors"))
    assert set(after) == set(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the base never moved, bit for bit

    for task in TASKS:  # one adapter per task (peft's format), trained: LoRA B starts at zero
        d = model_dir / A.ADAPTERS_DIR / task
        lora = load_file(str(d / "adapter_model.safetensors"))
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items()), task
        assert load_file(str(d / A.HEAD_NAME))
        cost = metrics["costs"]["tasks"][task]
        assert cost["bytes"] == A.task_bytes(model_dir, task)
        assert 0 < cost["trainable_pct"] < 5  # rank 4 on a 32-wide encoder with a 30k vocabulary
    assert metrics["costs"]["encoder_params"] == sum(v.numel() for v in before.values())
    from bertops.stages.headline import headline  # metrics/finetune.json: `dvc metrics diff` shows the cost

    top = headline("finetune", params)
    assert top["trainable_pct"] == round(metrics["costs"]["trainable_pct"], 4) < 5
    assert top["bytes_per_task"] == metrics["costs"]["bytes_per_task"]

    model = MultiTaskModel.from_pretrained(model_dir)  # peft loads each task's adapter
    assert sorted(model.encoder.peft_config) == sorted(TASKS)
    for task in TASKS:  # the reloaded model's gate score is the in-memory kept model's
        pred, gold = predict_split(model_dir, params.tasks[task], "validation", task)
        records = [json.loads(line) for line in open(real_data_dir / f"tasks/{task}/validation.jsonl")]
        gate_ids = {r["id"] for r in validation_parts(params, task, params.seed)[1]}
        idx = [i for i, r in enumerate(records) if r["id"] in gate_ids]
        again = score_task(model.tasks[task], [pred[i] for i in idx], [gold[i] for i in idx])
        assert again == pytest.approx(metrics["gate"]["tasks"][task]), task
