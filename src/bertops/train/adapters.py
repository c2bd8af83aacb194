"""Training side of finetune.mode adapters, and what each fine-tuning mode costs per task.

The adapters themselves (one LoRA adapter per task on the frozen encoder, peft; save and load) are
in the served package, bertops.model.multitask.adapters. Here:

    adapter_settings(ft) -> dict | None
        The `adapters=` argument of MultiTaskModel.build for finetune.mode adapters, else None.
    param_groups(model, ft) -> AdamW groups
        Every task's adapter and head at finetune.adapters.learning_rate (one rate for everything
        that trains, as in peft's examples; at full fine-tuning's head_learning_rate code entities'
        token head stayed on the `O` prior: F1 0), no weight decay on biases and norms. Each
        adapter is in the optimizer although peft marks only the active one trainable
        (set_adapter switches it per batch): an adapter whose task the step did not sample has no
        gradient, and AdamW leaves a parameter without one unchanged.
    parameter_costs(model, model_dir, mode) -> dict
        Per task, the parameters its training changes and the bytes a deployment stores for it
        alone, against the encoder's parameter count:
          finetune           encoder + the task's head (+ shared pooler/layer mix): a full copy per task
          feature_extraction the task's head + the shared pooler/layer mix (trained by every task)
          adapters           the task's LoRA adapter + its head (the files of adapters/<task>/)
        {"mode", "encoder_params", "encoder_bytes",
         "tasks": {task: {"trainable_params", "trainable_pct", "bytes"}},
         "trainable_pct": mean over tasks, "bytes_per_task": mean over tasks}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bertops.model.multitask.adapters import adapter_task, is_adapter_param, settings_dict, task_bytes

if TYPE_CHECKING:
    from bertops.config import FinetuneParams

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm")


def adapter_settings(ft: FinetuneParams) -> dict | None:
    if ft.mode != "adapters":
        return None
    a = ft.adapters
    # mean pooling reads no pooler: a per-task copy of it would be trained by nothing
    keep = [m for m in a.modules_to_save if not (ft.pooling == "mean" and m == "pooler")]
    return settings_dict(a.rank, a.alpha, a.dropout, a.target_modules, keep)


def param_groups(model, ft: FinetuneParams) -> list[dict]:
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        if is_adapter_param(name) or (p.requires_grad and not name.startswith("encoder.")):  # not the base
            groups.setdefault(0.0 if any(k in name for k in NO_DECAY) else ft.weight_decay, []).append(p)
    return [{"params": ps, "lr": ft.adapters.learning_rate, "weight_decay": wd} for wd, ps in groups.items()]


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def parameter_costs(model, model_dir: str | Path, mode: str) -> dict:
    """See the module docstring. `model` is the saved MultiTaskModel, `model_dir` where it was saved."""
    named = dict(model.named_parameters())
    encoder = {k: p for k, p in named.items() if k.startswith("encoder.") and not is_adapter_param(k)}
    n_encoder = sum(p.numel() for p in encoder.values())
    shared = {k: p for k, p in named.items() if not k.startswith(("encoder.", "heads."))}  # pooler, layer mix
    tasks = {}
    for task in model.tasks:
        head = [p for k, p in named.items() if k.startswith(f"heads.{task}.")]
        if mode == "adapters":
            own = [p for k, p in named.items() if is_adapter_param(k) and adapter_task(k) == task]
            n, stored = sum(p.numel() for p in own + head), task_bytes(model_dir, task)
        elif mode == "feature_extraction":
            n = sum(p.numel() for p in head + list(shared.values()))
            stored = _nbytes(head + list(shared.values()))
        else:  # the encoder is this task's own copy
            n = n_encoder + sum(p.numel() for p in head + list(shared.values()))
            stored = _nbytes(list(encoder.values()) + head + list(shared.values()))
        tasks[task] = {"trainable_params": int(n), "trainable_pct": round(100.0 * n / n_encoder, 4),
                       "bytes": int(stored)}
    return {"mode": mode, "encoder_params": int(n_encoder), "encoder_bytes": _nbytes(encoder.values()),
            "tasks": tasks, **summary(tasks)}


def summary(tasks: dict) -> dict:
    """Mean trainable % and bytes over tasks (also for single_task's per-task costs merged)."""
    n = max(1, len(tasks))
    return {"trainable_pct": round(sum(t["trainable_pct"] for t in tasks.values()) / n, 4),
            "bytes_per_task": int(round(sum(t["bytes"] for t in tasks.values()) / n))}
