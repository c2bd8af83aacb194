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

MFU = achieved FLOP/s / peak FLOP/s. Two peaks, and every MFU printed says which:
- the datasheet dense peak of the device in the matmul math used (`datasheet_peak_tflops`, e.g.
  989 TFLOP/s bf16 on an H100/H200 SXM): the common convention, comparable with published MFUs;
- the measured dense matmul ceiling (`measure_matmul_tflops`, e.g. 804 TFLOP/s bf16 on an H200,
  performance.md): what this machine can reach on a large square matmul, so a higher MFU.
The pretrain stage logs against `pretrain.peak_tflops` when given, else the measured ceiling.
"""

from __future__ import annotations

import time
from typing import Any

FLOP_CONVENTION = (
    "train FLOPs/token = 6*(L*(4h^2+2h*I) + h^2 + V*h) + 6*L*2*s*h (performance.md; MLM head at every "
    "position); executed FLOPs replace h^2+V*h by f*(h^2+V*h), f = predicted/total positions; "
    "MFU = FLOP/s / peak FLOP/s (datasheet dense peak or measured matmul ceiling: named where printed)")

# Datasheet dense peaks (no structured sparsity), TFLOP/s, per GPU, by the math the matmuls run in:
# "bf16" (bf16/fp16 tensor cores) or "tf32" (fp32 matmuls with TF32 allowed). Matched against
# torch.cuda.get_device_name() by substring, first match wins (so "GH200" before "H200", "A100"
# before "A10", "L40S" before "L4"; "NVIDIA H100 80GB HBM3" is the SXM part).
DATASHEET_PEAK_TFLOPS: list[tuple[str, str, dict[str, float]]] = [
    ("GH200", "GH200 Grace Hopper", {"bf16": 989.4, "tf32": 494.7}),
    ("H200 NVL", "H200 NVL", {"bf16": 835.5, "tf32": 417.5}),
    ("H200", "H200 SXM", {"bf16": 989.4, "tf32": 494.7}),
    ("H100 NVL", "H100 NVL", {"bf16": 835.5, "tf32": 417.5}),
    ("H100 PCIe", "H100 PCIe", {"bf16": 756.0, "tf32": 378.0}),
    ("H100", "H100 SXM", {"bf16": 989.4, "tf32": 494.7}),
    ("B200", "B200 (HGX)", {"bf16": 2250.0, "tf32": 1100.0}),
    ("A100", "A100", {"bf16": 312.0, "tf32": 156.0}),
    ("L40S", "L40S", {"bf16": 362.1, "tf32": 183.0}),
    ("A10", "A10", {"bf16": 125.0, "tf32": 62.5}),
    ("L4", "L4", {"bf16": 121.0, "tf32": 60.0}),
]


def datasheet_peak_tflops(device_name: str, math: str) -> tuple[float, str] | None:
    """(dense peak TFLOP/s, which part and math) from the datasheet table; None when the device is
    not in it (every CPU: give the peak yourself, e.g. cores x FMA width x 2 x clock)."""
    for pattern, part, peaks in DATASHEET_PEAK_TFLOPS:
        if pattern in device_name and math in peaks:
            return peaks[math], f"{part} {math} dense, datasheet"
    return None


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
    """The dense matmul ceiling of `device` in `dtype`, in TFLOP/s (a short timed loop of n x n
    matmuls): the measured MFU denominator, printed beside the datasheet one."""
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
