"""Per-task LoRA adapters on one frozen, shared encoder (finetune.mode adapters), with `peft`.

Every task has its own named LoRA adapter (peft's several adapters on one model) on the same
encoder, and its own head. The base encoder's weights never change. Each batch (in training) and
each group of a request's rows (in serving) holds one task, so `MultiTaskModel.forward` activates
that task's adapter (`set_adapter`) before the encoder runs. Tasks share no trainable parameter:
a task can be retrained, added or dropped without changing any other task's answers, and what one
task costs to store is its adapter plus its head.

Saved layout (`save`), the model dir of finetune.mode adapters:

    config.json, model.safetensors, tokenizer files      the shared encoder (a standard BertModel,
                                                          bit-identical to the one training started from)
    adapters/<task>/adapter_config.json                  peft's save format (PeftModel.save_pretrained)
    adapters/<task>/adapter_model.safetensors
    adapters/<task>/head.safetensors                     the task's head
    heads.safetensors, multitask_config.json             as every mode ("adapters": the LoRA settings)

`load_encoder` reads it back with peft's own loader (PeftModel.from_pretrained / load_adapter).
Standard library at import time; peft, torch and safetensors are imported when used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .spec import BertopsError

ADAPTERS_DIR = "adapters"
HEAD_NAME = "head.safetensors"
# LoRA (Hu et al. 2021) on every attention projection's query and value and on every `dense` layer
# of a BERT encoder (attention output, feed-forward in and out, pooler): ~1.1% of BERT-base's weights
# per task at rank 8. alpha/rank scales the update (LoRA's convention).
# modules_to_save: encoder modules each task gets its own trainable copy of (peft), e.g. ["pooler"]
DEFAULTS = {"rank": 8, "alpha": 16.0, "dropout": 0.1, "target_modules": ["query", "value", "dense"],
            "modules_to_save": []}


def settings_dict(rank: int, alpha: float, dropout: float, target_modules: Sequence[str],
                  modules_to_save: Sequence[str] = ()) -> dict:
    """The adapter settings a model records in multitask_config.json (keys of DEFAULTS)."""
    return {"rank": int(rank), "alpha": float(alpha), "dropout": float(dropout),
            "target_modules": list(target_modules), "modules_to_save": list(modules_to_save)}


def lora_config(settings: dict):
    from peft import LoraConfig

    s = {**DEFAULTS, **settings}
    return LoraConfig(r=s["rank"], lora_alpha=s["alpha"], lora_dropout=s["dropout"],
                      target_modules=list(s["target_modules"]), modules_to_save=list(s["modules_to_save"]) or None,
                      bias="none")


def is_wrapped(encoder) -> bool:
    return hasattr(encoder, "peft_config")


def wrap_encoder(encoder, tasks: Sequence[str], settings: dict):
    """A PeftModel over `encoder` with a fresh LoRA adapter named after each task (B = 0, so every
    task starts from the base encoder's output); every base weight frozen."""
    from peft import get_peft_model

    if not tasks:
        raise BertopsError("adapters: no tasks to make adapters for")
    first, *rest = tasks
    try:
        model = get_peft_model(encoder, lora_config(settings), adapter_name=first)
    except ValueError as e:  # e.g. target modules that name no layer of this encoder
        raise BertopsError(f"adapters: target_modules {settings.get('target_modules')}: {e}") from None
    for task in rest:
        model.add_adapter(task, lora_config(settings))
    model.set_adapter(first)
    return model


def is_adapter_param(name: str) -> bool:
    """A task's own parameter (LoRA, or its copy of a module_to_save) in the encoder or the model."""
    return ".lora_" in name or ".modules_to_save." in name


def adapter_task(name: str) -> str | None:
    """The task (adapter name) such a parameter belongs to: '...lora_A.<task>.weight',
    '...pooler.modules_to_save.<task>.dense.weight'."""
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p.startswith("lora_") or p == "modules_to_save":
            return parts[i + 1]
    return None


def base_state_dict(encoder) -> dict:
    """The base encoder's weights under their plain BertModel names (each task's tensors left out,
    peft's '.base_layer.' and '.original_module.' taken out of the wrapped modules' names)."""
    state = encoder.get_base_model().state_dict()
    return {k.replace(".base_layer.", ".").replace(".original_module.", "."): v
            for k, v in state.items() if not is_adapter_param("." + k)}


def save(model, out_dir: Path, heads: dict) -> dict:
    """Write the shared encoder, each task's adapter (peft's format) and head under out_dir; return
    the head tensors that belong to no single task (written by the caller to heads.safetensors)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    encoder = model.encoder
    state = {k: v.detach().contiguous().cpu() for k, v in base_state_dict(encoder).items()}
    encoder.get_base_model().save_pretrained(out, state_dict=state)
    encoder.save_pretrained(out / ADAPTERS_DIR, selected_adapters=list(model.tasks))
    shared = dict(heads)
    for task in model.tasks:
        prefix = f"heads.{task}."
        own = {k: shared.pop(k) for k in list(shared) if k.startswith(prefix)}
        save_file(own, str(out / ADAPTERS_DIR / task / HEAD_NAME))
    return shared


def load_encoder(encoder, model_dir: Path, tasks: Sequence[str]):
    """The base `encoder` (read from model_dir) with each task's saved adapter loaded by peft."""
    from peft import PeftModel

    root = Path(model_dir) / ADAPTERS_DIR
    missing = [t for t in tasks if not (root / t / "adapter_config.json").exists()]
    if missing:
        raise BertopsError(f"{model_dir}: no saved adapter for tasks {missing} (expected {root}/<task>/)")
    first, *rest = tasks
    model = PeftModel.from_pretrained(encoder, str(root / first), adapter_name=first)
    for task in rest:
        model.load_adapter(str(root / task), adapter_name=task)
    model.set_adapter(first)
    return model


def load_heads(model_dir: Path, tasks: Sequence[str]) -> dict:
    """Every task's head tensors, as saved by `save`."""
    from safetensors.torch import load_file

    state: dict = {}
    for task in tasks:
        state.update(load_file(str(Path(model_dir) / ADAPTERS_DIR / task / HEAD_NAME)))
    return state


def task_bytes(model_dir: Path, task: str) -> int:
    """Bytes stored for one task: its adapter dir (adapter weights, peft config and head)."""
    return sum(p.stat().st_size for p in (Path(model_dir) / ADAPTERS_DIR / task).rglob("*") if p.is_file())
