"""FLOP counting and MFU, with the convention of shared/notes/performance.md.

FLOP_CONVENTION (stated wherever MFU is printed or logged): training FLOPs per token =
    6 x (L x (4h^2 + 2h*I) + h^2 + V*h) + 6 x L x 2 x s x h
i.e. 3 x (forward + backward) x 2 FLOPs per multiply-add over the dense weights, the MLM transform
(h^2) and decoder (V*h) applied at EVERY position (as stock Hugging Face does), and the attention
scores (s = sequence length). Embedding look-ups, LayerNorm, softmax and the pooler/NSP head are
ignored. This is the "model FLOPs" figure: it only depends on the model and the tokens.

bertops applies the MLM transform and decoder only at the masked positions (about 15%), so it
*executes* fewer FLOPs for the same tokens: `executed_flops_per_token` replaces h^2 + V*h by
f x (h^2 + V*h), f = predicted positions / tokens. Compare the two implementations by tokens/s;
MFU is reported both ways (model FLOPs = stock convention, executed FLOPs = what ran).

MFU = achieved FLOP/s / peak FLOP/s, where peak is the *measured* dense matmul ceiling of the
device in the training dtype (performance.md: 804 TFLOP/s bf16 on an H200), unless given.
"""

from __future__ import annotations

import time
from typing import Any

FLOP_CONVENTION = (
    "train FLOPs/token = 6*(L*(4h^2+2h*I) + h^2 + V*h) + 6*L*2*s*h (performance.md; MLM head at every "
    "position); executed FLOPs replace h^2+V*h by f*(h^2+V*h), f = predicted/total positions; "
    "MFU = FLOP/s / measured dense matmul peak")


def _dims(config: Any) -> tuple[int, int, int, int]:
    return (config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.vocab_size)


def model_flops_per_token(config: Any, seq_len: int) -> float:
    """Training FLOPs per token by the stock convention (MLM head applied at every position)."""
    L, h, i, v = _dims(config)
    return 6.0 * (L * (4 * h * h + 2 * h * i) + h * h + v * h) + 6.0 * L * 2 * seq_len * h


def executed_flops_per_token(config: Any, seq_len: int, predicted_fraction: float) -> float:
    """Training FLOPs per token when the MLM head runs on `predicted_fraction` of the positions."""
    L, h, i, v = _dims(config)
    return (6.0 * L * (4 * h * h + 2 * h * i) + 6.0 * L * 2 * seq_len * h
            + 6.0 * predicted_fraction * (h * h + v * h))


def measure_matmul_tflops(device: Any = "cpu", dtype: Any = None, n: int | None = None,
                          seconds: float = 0.5) -> float:
    """The dense matmul ceiling of `device` in `dtype`, in TFLOP/s (a short timed loop).

    The MFU denominator: a measured ceiling instead of a datasheet figure, as performance.md does.
    """
    import torch

    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    n = n or (8192 if device.type == "cuda" else 1024)
    g = torch.Generator().manual_seed(0)  # its own generator: measuring must not move the global RNG
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):
        a @ b
    sync()
    iters, start = 0, time.perf_counter()
    while True:
        for _ in range(5):
            a @ b
        iters += 5
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2.0 * n ** 3 * iters / elapsed / 1e12
