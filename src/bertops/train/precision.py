"""Lightning precision for `precision: auto` (pretrain and finetune)."""

from __future__ import annotations

import torch


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16 autocast on a GPU that supports it, full fp32 elsewhere."""
    if precision != "auto":
        return precision
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"
