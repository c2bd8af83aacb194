"""Knowledge distillation (Hinton et al. 2015; DistilBERT, Sanh et al. 2019) of a fine-tuned
multi-task model into a smaller one, on the tasks' training data.

    build_student(teacher, num_layers=None, preset=None, teachers=None) -> MultiTaskModel
        A smaller encoder with the teacher's tasks: the teacher's config with `num_layers` layers
        (default half, at least 1), or a model preset. Initialised from the teacher where shapes
        allow (DistilBERT): embeddings, the pooler, student layer i from teacher layer
        round(i * L_teacher / L_student) (every other one at half depth), and the heads; any tensor
        whose shape differs (another hidden size) keeps its fresh initialisation. An adapters
        teacher gives its base encoder (a per-task LoRA delta has no single-model equivalent).
        teachers: {task: its teacher} when each task has its own (finetune.mode single_task): the
        student gets every task, each head from its task's teacher, the encoder from `teacher`.
    distill_loss(task_type, student_logits, teacher_logits, batch, temperature) -> tensor
        KL(teacher || student) of the temperature-softened distributions, times T^2: over labels
        (classification; squared error for a one-output regression head), over tags at each
        labelled token (token classification), over positions for the answer's start and end
        (extractive QA; padding masked).
    fit_distill(params, teacher_dir, out_dir, seed, loggers=None) -> dict
        Trains the student with finetune's budget and task sampler on each batch's loss
        alpha * distill_loss + (1 - alpha) * the task's own loss on the gold labels (params
        `distill:`; plus hidden_weight * the mean squared error between the two encoders' last
        hidden states at unpadded positions, an option for equal hidden sizes), keeps the best
        epoch on the selection examples, scores the gate examples once, saves out_dir/model (a
        MultiTaskModel dir) and returns fit_multitask's result plus "teacher_dir", "student"
        (layers, hidden size, parameters) and "teacher_params". A single_task teacher dir gives
        one teacher per task (its own model) and one multi-task student.
The test split is never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from bertops.errors import BertopsError
from bertops.train.finetune_module import MultiTaskModule

if TYPE_CHECKING:
    from bertops.config import Params


def _encoder_state(model) -> dict[str, torch.Tensor]:
    from bertops.model.multitask import adapters

    enc = model.encoder
    return adapters.base_state_dict(enc) if adapters.is_wrapped(enc) else enc.state_dict()


def build_student(teacher, num_layers: int | None = None, preset: str | None = None, teachers: dict | None = None):
    from transformers import BertConfig, BertModel

    from bertops.model.multitask import MultiTaskModel

    cfg = teacher.encoder.config.to_dict()
    if preset is not None:
        from bertops.model.presets import preset_fields

        cfg.update(preset_fields(preset))
    teacher_layers = teacher.encoder.config.num_hidden_layers
    if num_layers is not None:
        cfg["num_hidden_layers"] = num_layers
    elif preset is None:
        cfg["num_hidden_layers"] = max(1, teacher_layers // 2)
    student_layers = cfg["num_hidden_layers"]
    encoder = BertModel(BertConfig.from_dict(cfg))
    teachers = teachers or {t: teacher for t in teacher.tasks}
    student = MultiTaskModel(encoder, teacher.tokenizer, [m.tasks[t] for t, m in teachers.items()],
                             feature_layers="last", classifier_dropout=teacher.classifier_dropout,
                             pooling=teacher.pooling)
    # copy what fits: student layer i <- teacher layer round(i * L_t / L_s)
    source = _encoder_state(teacher)
    mapping = {i: min(teacher_layers - 1, round(i * teacher_layers / student_layers)) for i in range(student_layers)}
    state = student.state_dict()
    heads = {k: v for t, m in teachers.items() for k, v in m.state_dict().items() if k.startswith(f"heads.{t}.")}
    copied = 0
    for key in state:
        src_key = key
        if key.startswith("encoder.encoder.layer."):
            i, rest = key[len("encoder.encoder.layer."):].split(".", 1)
            src_key = f"encoder.encoder.layer.{mapping[int(i)]}.{rest}"
        if src_key.startswith("encoder."):
            value = source.get(src_key[len("encoder."):])
        else:
            value = heads.get(src_key)
        if value is not None and value.shape == state[key].shape:
            state[key] = value.detach().clone()
            copied += 1
    student.load_state_dict(state)
    student.copied_from_teacher = copied  # type: ignore[attr-defined]
    return student


def distill_loss(task_type: str, student: torch.Tensor, teacher: torch.Tensor, batch: dict,
                 temperature: float) -> torch.Tensor:
    t = temperature
    if student.dim() == 2:  # sequence / pair classification: [batch, labels]
        if student.shape[-1] == 1:  # regression
            return F.mse_loss(student, teacher)
        return _kl(student / t, teacher / t) * t * t
    mask = batch["attention_mask"].bool()
    if task_type == "extractive_qa":  # [batch, seq, 2]: distributions over positions
        neg = torch.finfo(student.dtype).min
        s = student.masked_fill(~mask[..., None], neg)
        te = teacher.masked_fill(~mask[..., None], neg)
        return sum(_kl(s[..., k] / t, te[..., k] / t) for k in range(2)) / 2 * t * t
    keep = batch["labels"] != -100 if "labels" in batch else mask  # tokens: the labelled positions
    return _kl(student[keep] / t, teacher[keep] / t) * t * t


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(student_logits.float(), -1), F.log_softmax(teacher_logits.float(), -1),
                    reduction="batchmean", log_target=True)


class DistillModule(MultiTaskModule):
    """MultiTaskModule whose training loss mixes the teacher's soft targets with the gold labels."""

    def __init__(self, model, ft, eval_sets, teachers: dict, temperature: float, alpha: float,
                 hidden_weight: float = 0.0):
        super().__init__(model, ft, eval_sets)
        # {task: teacher} in a plain dict: not submodules, so neither saved nor trained nor put in train mode
        self.teachers = {t: m.eval().requires_grad_(False) for t, m in teachers.items()}
        self.temperature, self.alpha, self.hidden_weight = temperature, alpha, hidden_weight
        self._hidden: dict[str, torch.Tensor] = {}
        if hidden_weight > 0:  # the last hidden states of both encoders, caught by forward hooks
            sizes = {model.encoder.config.hidden_size, *(m.encoder.config.hidden_size for m in teachers.values())}
            if len(sizes) > 1:
                raise BertopsError(f"distill.hidden_weight needs the student's hidden size to be the teacher's "
                                   f"(got {sorted(sizes)}); use student_layers, or hidden_weight 0")
            self._hook(model.encoder, "student")
            for m in {id(m): m for m in teachers.values()}.values():
                self._hook(m.encoder, "teacher")

    def _hook(self, encoder, name: str) -> None:
        encoder.register_forward_hook(lambda mod, args, out: self._hidden.__setitem__(name, out.last_hidden_state))

    def training_step(self, batch, batch_idx):
        task = batch.pop("task")
        spec = self.model.tasks[task]
        inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        logits = self.model(task, *inputs)
        teacher = self.teachers[task]
        teacher.to(logits.device)
        with torch.no_grad():
            target = teacher(task, *inputs)
        hard = self.model.loss(spec, logits, batch)
        soft = distill_loss(spec.type, logits, target, batch, self.temperature)
        loss = self.alpha * soft + (1 - self.alpha) * hard
        n = len(batch["input_ids"])
        if self.hidden_weight > 0:  # hidden-state matching (DistilBERT's cosine, TinyBERT's MSE: MSE here)
            mask = batch["attention_mask"].bool()
            hidden = F.mse_loss(self._hidden["student"][mask], self._hidden["teacher"][mask].detach())
            loss = loss + self.hidden_weight * hidden
            self.log("train/hidden_loss", hidden, on_step=True, on_epoch=False, batch_size=n)
        self.log("train/soft_loss", soft, on_step=True, on_epoch=False, batch_size=n)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        return loss * spec.loss_weight


def fit_distill(params: Params, teacher_dir: str | Path, out_dir: str | Path, seed: int, loggers=None) -> dict:
    from bertops.model.multitask import MultiTaskModel, single_task_dirs
    from bertops.train import finetune

    dp = params.distill
    if not Path(teacher_dir).is_dir():
        raise BertopsError(f"distill: no teacher at {teacher_dir} (run the finetune stage or set distill.teacher_dir)")
    dirs = single_task_dirs(teacher_dir)
    if dirs is None:  # one multi-task model teaches every task
        teacher = MultiTaskModel.from_pretrained(teacher_dir)
        teachers = {t: teacher for t in teacher.tasks}
    else:  # finetune.mode single_task: each task's own model teaches it
        teachers = {t: MultiTaskModel.from_pretrained(d) for t, d in dirs.items()}
    names = list(teachers)
    teacher = teachers[names[0]]
    missing = [t for t in names if t not in params.tasks]
    if missing:
        raise BertopsError(f"distill: the teacher's tasks {missing} are not declared under `tasks:`")
    student = build_student(teacher, dp.student_layers, dp.student_preset, teachers)
    ft = params.finetune.model_copy(update={"mode": "finetune", "feature_layers": "last"})
    run_params = params.model_copy(update={"finetune": ft})

    def module(model, ft_, eval_sets):
        return DistillModule(model, ft_, eval_sets, teachers, dp.temperature, dp.alpha, dp.hidden_weight)

    out_dir = Path(out_dir)
    result = finetune._fit(run_params, names, Path(teacher_dir), out_dir, out_dir / "model", seed, False, loggers,
                           model=student, module_factory=module)
    n_student = sum(p.numel() for p in student.encoder.parameters())
    n_teacher = sum(v.numel() for v in _encoder_state(teacher).values())
    cfg = student.encoder.config
    return {**result, "model_dir": str(out_dir / "model"), "model_dirs": {t: str(out_dir / "model") for t in names},
            "teacher_dir": str(teacher_dir), "teacher_params": int(n_teacher),
            "student": {"num_hidden_layers": cfg.num_hidden_layers, "hidden_size": cfg.hidden_size,
                        "encoder_params": int(n_student), "tensors_from_teacher": student.copied_from_teacher}}
