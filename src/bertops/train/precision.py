"""Where training runs and at what precision, for `precision: auto` (pretrain and finetune)."""

from __future__ import annotations

import torch


def on_gpu(accelerator: str) -> bool:
    """Lightning will train on a CUDA GPU with this `accelerator` setting."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16 autocast on a GPU that supports it, full fp32 elsewhere. On a GPU, fp32 matmuls
    (whatever runs outside bf16 autocast, or all of an fp32 run) use TF32."""
    gpu = on_gpu(accelerator)
    if gpu:
        torch.set_float32_matmul_precision("high")
    if precision != "auto":
        return precision
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"
