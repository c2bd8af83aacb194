"""Stage `distill` on small slices of the real tasks: a 1-layer student of a 2-layer fine-tuned
teacher, initialised from the teacher where shapes allow, trained on soft targets + gold labels,
saved as a MultiTaskModel that loads and predicts; the distillation loss of each task type."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import write_tiny_encoder
from tests.integration.test_finetune import real_params

TASKS = ["sentiment", "wic", "code-entities", "define-qa"]


@pytest.mark.parametrize("task_type,shape", [("sequence_classification", (3, 2)), ("token_classification", (3, 5, 4)),
                                             ("extractive_qa", (3, 5, 2))])
def test_distill_loss_is_zero_on_the_teachers_logits_and_positive_elsewhere(task_type, shape):
    from bertops.train.distill import distill_loss

    torch.manual_seed(0)
    teacher = torch.randn(shape)
    batch = {"attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]),
             "labels": torch.tensor([[-100, 1, 2, -100, -100], [-100, 0, 1, 3, -100], [-100, 1, -100, -100, -100]])}
    assert distill_loss(task_type, teacher.clone(), teacher, batch, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(task_type, torch.randn(shape), teacher, batch, 2.0).item() > 0
    if task_type == "extractive_qa":  # padding positions do not count
        other = teacher.clone()
        other[0, 3:] += 5.0
        assert distill_loss(task_type, other, teacher, batch, 2.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_distill_stage_trains_a_smaller_student_from_the_teacher(real_data_dir, tmp_path, monkeypatch):
    from bertops.model.multitask import MultiTaskModel
    from bertops.stages import distill
    from bertops.train.distill import build_student
    from bertops.train.finetune import fit_multitask, predict_split

    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    encoder = write_tiny_encoder(tmp_path / "encoder")  # 2 layers
    params = real_params(real_data_dir, tmp_path, **{
        "finetune.tasks": TASKS, "finetune.max_epochs": 1, "distill.out_dir": str(tmp_path / "distill"),
        "distill.teacher_dir": str(tmp_path / "finetune" / "model")})
    fit_multitask(params, str(encoder), tmp_path / "finetune", params.seed, tasks=TASKS)
    teacher = MultiTaskModel.from_pretrained(tmp_path / "finetune" / "model")

    student = build_student(teacher)  # half the layers; embeddings, layer 0, pooler and heads from the teacher
    assert student.encoder.config.num_hidden_layers == 1
    t, s = teacher.state_dict(), student.state_dict()
    for key in ("encoder.embeddings.word_embeddings.weight", "encoder.encoder.layer.0.attention.self.query.weight",
                "encoder.pooler.dense.weight", "heads.code-entities.1.weight"):
        assert torch.equal(s[key], t[key]), key
    assert not [k for k in s if k.startswith("encoder.encoder.layer.1.")]

    distill.main(params)
    m = json.loads((tmp_path / "distill" / "metrics.json").read_text())
    assert m["student"]["num_hidden_layers"] == 1 and m["student"]["encoder_params"] < m["teacher_params"]
    assert set(m["gate"]["tasks"]) == set(TASKS) and m["steps"] == 10
    model = MultiTaskModel.from_pretrained(tmp_path / "distill" / "model")
    assert model.encoder.config.num_hidden_layers == 1 and sorted(model.tasks) == sorted(TASKS)
    pred, gold = predict_split(tmp_path / "distill" / "model", params.tasks["wic"], "validation", "wic")
    assert len(pred) == len(gold) > 0


@pytest.mark.slow
def test_single_task_teachers_distill_into_one_multitask_student(real_data_dir, tmp_path):
    from bertops.model.multitask import MultiTaskModel
    from bertops.train.distill import build_student, fit_distill
    from bertops.train.finetune import fit_multitask

    encoder = write_tiny_encoder(tmp_path / "encoder")
    params = real_params(real_data_dir, tmp_path, **{"finetune.mode": "single_task", "finetune.max_epochs": 1,
                                                    "finetune.steps_per_epoch": 4})
    r = fit_multitask(params, str(encoder), tmp_path / "st", params.seed, tasks=["sentiment", "wic"])
    teachers = {t: MultiTaskModel.from_pretrained(d) for t, d in r["model_dirs"].items()}
    student = build_student(teachers["sentiment"], teachers=teachers)
    for t, m in teachers.items():  # each head from its own task's teacher
        key = next(k for k in m.state_dict() if k.startswith(f"heads.{t}.") and k.endswith("weight"))
        assert torch.equal(student.state_dict()[key], m.state_dict()[key]), t

    hidden = params.model_copy(update={"distill": params.distill.model_copy(update={"hidden_weight": 1.0})})
    out = fit_distill(hidden, r["model_dir"], tmp_path / "distill", params.seed)  # + hidden-state matching
    assert out["steps"] == 4
    model = MultiTaskModel.from_pretrained(out["model_dir"])
    assert sorted(model.tasks) == ["sentiment", "wic"] and model.encoder.config.num_hidden_layers == 1
