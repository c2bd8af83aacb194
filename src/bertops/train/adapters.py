"""Training side of finetune.mode adapters, and what each fine-tuning mode costs per task.

The adapters themselves (one LoRA adapter per task on the frozen encoder, peft; save and load) are
in the served package, bertops.model.multitask.adapters. Here:

    adapter_settings(ft) -> dict | None
        The `adapters=` argument of MultiTaskModel.build for finetune.mode adapters, else None.
    trains(name, p) -> bool
        Whether a parameter trains in this mode: every task's adapter (although peft marks only the
        active one trainable) and the heads, not the base encoder;
        bertops.train.finetune_module.param_groups builds the optimizer's groups with it.
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

def adapter_settings(ft: FinetuneParams) -> dict | None:
    if ft.mode != "adapters":
        return None
    a = ft.adapters
    # mean pooling reads no pooler: a per-task copy of it would be trained by nothing
    keep = [m for m in a.modules_to_save if not (ft.pooling == "mean" and m == "pooler")]
    return settings_dict(a.rank, a.alpha, a.dropout, a.target_modules, keep)


def trains(name: str, p) -> bool:
    """Every task's adapter is in the optimizer although peft marks only the active one trainable
    (set_adapter switches it per batch): an adapter whose task the step did not sample has no
    gradient, and AdamW leaves a parameter without one unchanged. The base encoder is frozen."""
    return is_adapter_param(name) or (p.requires_grad and not name.startswith("encoder."))


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
