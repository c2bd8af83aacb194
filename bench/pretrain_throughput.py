"""Pretraining step throughput: stock Hugging Face BertForPreTraining vs the bertops step.

Both run in this one process, on the same BertConfig (same initial weights), batch, sequence
length, precision and optimizer (AdamW, fused on CUDA), on random token ids with 15% of the
positions labelled for MLM and a random NSP label. The stock step is what most users run:
`BertForPreTraining(..., labels=..., next_sentence_label=...)` with SDPA attention, which
projects every position onto the vocabulary. The bertops step is the same model through
`bertops.model.pretraining.BertPretrainingObjective`, which runs the MLM head only at the masked
positions (with --compile: torch.compile, static shapes: a fixed number of gathered rows).
The strongest stock configuration, stock + torch.compile, is timed in the same run (unless
--no-compile-stock), and every speed and memory figure is given as a ratio against both stock
eager and stock + compile: a reader should not have to guess which baseline a speed-up is over.

Warm-up steps are excluded; the variants' timed windows are interleaved (so load from other
processes hits both alike) and the median window is reported, as wall time (tokens/s, ratio) and
as this process's CPU time (a steadier comparison on a shared CPU, best with --threads 1). FLOPs: bertops.train.flops
(performance.md convention; "model" = stock convention, "executed" = what the step really runs).
Peak memory: torch.cuda.max_memory_allocated on GPU; on CPU, the peak RSS growth during a step
(sampled from /proc/self/statm in a separate, untimed pass), an estimate.
MFU is printed against two peaks, each labelled: the device's datasheet dense peak for the matmul
math (bertops.train.flops.DATASHEET_PEAK_TFLOPS, or --peak-tflops; n/a on a CPU unless given),
the common convention; and the measured dense matmul ceiling of this device, which is lower, so
its MFU is higher.

    python bench/pretrain_throughput.py                         # tiny, 32 x 128, fp32 on CPU
    python bench/pretrain_throughput.py --preset base --batch-size 256 --seq-len 128 \
        --precision bf16 --compile                                # the GPU headline (H100/H200)
    python bench/pretrain_throughput.py --threads 1 --no-compile-stock   # quick, no compilation

Imports only torch, transformers and bertops core (no prefect/mlflow/dvc/great_expectations),
so it runs on a bare GPU worker.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a plain checkout

import torch

from bertops.model.presets import bert_config
from bertops.model.pretraining import BertPretrainingObjective, build_pretraining_model
from bertops.train.flops import (
    FLOP_CONVENTION,
    datasheet_peak_tflops,
    executed_flops_per_token,
    measure_matmul_tflops,
    model_flops_per_token,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--vocab-size", type=int, default=30522, help="BERT's uncased vocabulary size")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the bertops step (static shapes)")
    p.add_argument("--compile-stock", dest="compile_stock", action="store_true", default=True,
                   help="also time stock + torch.compile, the strongest stock baseline (default)")
    p.add_argument("--no-compile-stock", dest="compile_stock", action="store_false",
                   help="skip stock + torch.compile (faster; ratios then only against stock eager)")
    p.add_argument("--steps", type=int, default=5, help="steps per timed window")
    p.add_argument("--windows", type=int, default=5, help="timed windows per variant (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--mlm-probability", type=float, default=0.15)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="datasheet peak TFLOP/s for the MFU column (default: the table in bertops.train.flops; "
                        "none for CPUs). The measured matmul ceiling is printed beside it either way")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def random_batch(args, device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(args.seed)
    b, s, v = args.batch_size, args.seq_len, args.vocab_size
    input_ids = torch.randint(5, v, (b, s), generator=g)
    input_ids[:, 0], input_ids[:, s // 2], input_ids[:, -1] = 2, 3, 3  # [CLS] A [SEP] B [SEP]
    token_type_ids = (torch.arange(s) > s // 2).long().expand(b, s).contiguous()
    maskable = torch.ones(b, s, dtype=torch.bool)
    maskable[:, [0, s // 2, s - 1]] = False
    chosen = (torch.rand(b, s, generator=g) < args.mlm_probability) & maskable
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    input_ids = torch.where(chosen, torch.full_like(input_ids, 4), input_ids)  # [MASK]
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids,
             "attention_mask": torch.ones(b, s, dtype=torch.long), "labels": labels,
             "next_sentence_label": torch.randint(0, 2, (b,), generator=g)}
    return {k: t.to(device) for k, t in batch.items()}


class RssSampler:
    """Peak resident memory growth while active (CPU only; sampled every ~1 ms)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def make_variants(args, config, device, dtype):
    torch.manual_seed(args.seed)
    stock = build_pretraining_model(config).to(device)
    ours = build_pretraining_model(config).to(device)
    ours.load_state_dict(stock.state_dict())
    fused = device.type == "cuda"
    predicted = {}

    def stepper(name, model, forward):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        model.train()

        def step(batch):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = forward(batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return name, step

    def stock_forward(m):
        return lambda batch: m(**batch).loss

    per_seq = math.ceil(args.mlm_probability * args.seq_len) + 2
    objective = BertPretrainingObjective(ours, max_predictions=args.batch_size * per_seq if args.compile else None)
    if args.compile:
        objective.compile(dynamic=False)

    def ours_forward(batch):
        out = objective(**batch)
        predicted["bertops"] = out.predicted_positions
        return out.loss

    variants = [stepper("stock HF BertForPreTraining", stock, stock_forward(stock)),
                stepper("bertops" + (" + compile" if args.compile else ""), ours, ours_forward)]
    if args.compile_stock:
        stock_c = build_pretraining_model(config).to(device)
        stock_c.load_state_dict(stock.state_dict())
        stock_c.compile(dynamic=False)
        variants.insert(1, stepper("stock + compile", stock_c, stock_forward(stock_c)))
    return variants, predicted


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    config = bert_config(args.preset, args.vocab_size, {"max_position_embeddings": max(512, args.seq_len)})
    batch = random_batch(args, device)
    variants, predicted = make_variants(args, config, device, dtype)
    tokens = args.batch_size * args.seq_len

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _, step in variants:  # warm-up (and compilation) excluded from timing
        for _ in range(args.warmup):
            step(batch)
    sync()

    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    # process CPU time too: on a shared CPU, wall time also measures the other processes' load
    cpu_times: dict[str, list[float]] = {name: [] for name, _ in variants}
    peak_mem: dict[str, float] = {name: 0.0 for name, _ in variants}
    for _ in range(args.windows):  # interleaved windows
        for name, step in variants:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step(batch)
            sync()
            times[name].append((time.perf_counter() - t0) / args.steps)
            cpu_times[name].append((time.process_time() - c0) / args.steps)
            if device.type == "cuda":
                peak_mem[name] = max(peak_mem[name], torch.cuda.max_memory_allocated(device) / 2**30)
    if device.type == "cpu":  # separate untimed pass: the sampler thread would slow the steps
        for name, step in variants:
            with RssSampler() as rss:
                step(batch)
                step(batch)
            peak_mem[name] = (rss.peak - rss.base) / 2**30

    measured = measure_matmul_tflops(device, dtype)
    math_kind = "bf16" if dtype == torch.bfloat16 else "tf32"  # fp32 matmuls run as TF32 here on CUDA
    dev_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU, {torch.get_num_threads()} threads")
    if args.peak_tflops:
        sheet, sheet_label = args.peak_tflops, "given with --peak-tflops"
    elif device.type == "cuda" and (found := datasheet_peak_tflops(dev_name, math_kind)):
        sheet, sheet_label = found
    else:
        sheet, sheet_label = None, "not known for this device (give --peak-tflops)"
    stock_flops = model_flops_per_token(config, args.seq_len)
    names = [name for name, _ in variants]
    eager_name = names[0]
    compiled_name = "stock + compile" if "stock + compile" in names else None
    rows = []
    for name in names:
        sec = statistics.median(times[name])
        tps = tokens / sec
        frac = predicted["bertops"] / tokens if name.startswith("bertops") else 1.0
        executed = executed_flops_per_token(config, args.seq_len, frac)
        model_tflops, executed_tflops = stock_flops * tps / 1e12, executed * tps / 1e12
        rows.append({"variant": name, "ms_per_step": sec * 1e3, "tokens_per_s": tps,
                     "cpu_ms_per_step": statistics.median(cpu_times[name]) * 1e3,
                     "model_tflops": model_tflops, "executed_tflops": executed_tflops,
                     # MFU against the measured matmul ceiling (mfu_model/mfu_executed) and against
                     # the datasheet peak (*_datasheet; None when no datasheet peak is known)
                     "mfu_model": model_tflops / measured, "mfu_executed": executed_tflops / measured,
                     "mfu_model_datasheet": model_tflops / sheet if sheet else None,
                     "mfu_executed_datasheet": executed_tflops / sheet if sheet else None,
                     "peak_mem_gib": peak_mem[name],
                     "window_ms": [round(t * 1e3, 1) for t in times[name]]})
    by_name = {r["variant"]: r for r in rows}
    for r in rows:  # speed-up (tokens/s ratio) and memory ratio against each stock baseline
        for key, base in (("stock_eager", eager_name), ("stock_compile", compiled_name)):
            b = by_name.get(base)
            r[f"speedup_vs_{key}"] = r["tokens_per_s"] / b["tokens_per_s"] if b else None
            # under 1 MiB (a tiny model's CPU RSS growth) the ratio is noise: n/a
            r[f"mem_vs_{key}"] = r["peak_mem_gib"] / b["peak_mem_gib"] if b and b["peak_mem_gib"] > 2**-10 else None
        r["ratio"] = r["speedup_vs_stock_eager"]  # the old name

    def pct(x):
        return "n/a" if x is None else f"{x:.1%}"

    def times_(x):
        return "n/a" if x is None else f"{x:.2f}x"

    mem_label = "peak GiB (cuda max allocated)" if device.type == "cuda" else "step RSS growth GiB (approx)"
    print(f"# {args.preset} (L{config.num_hidden_layers}/H{config.hidden_size}/A{config.num_attention_heads}"
          f"/I{config.intermediate_size}), vocab {args.vocab_size}, batch {args.batch_size} x seq {args.seq_len}, "
          f"{precision}, {dev_name}, torch {torch.__version__}")
    print(f"# median of {args.windows} windows x {args.steps} steps, {args.warmup} warm-up steps excluded "
          f"(compilation included in warm-up)")
    print(f"# peaks: datasheet {sheet:.4g} TFLOP/s ({sheet_label}); " if sheet else
          f"# peaks: datasheet n/a ({sheet_label}); ", end="")
    print(f"measured dense matmul ceiling {measured:.4g} TFLOP/s ({math_kind if device.type == 'cuda' else 'fp32'}, "
          f"this device, this run)")
    print(f"# FLOPs: {FLOP_CONVENTION}")
    print("# speed-up = tokens/s ratio; 'vs stock + compile' is the fair one: any user can switch compile on")
    print("# MFU (model FLOPs) credits every variant with the stock FLOPs of its tokens (comparable across variants;"
          " a sparse MLM head can pass 100%); MFU (executed) counts the FLOPs the step really ran")
    header = ["variant", "ms/step", "tokens/s", "vs stock eager", "vs stock + compile",
              "MFU vs datasheet (model FLOPs)", "MFU vs datasheet (executed)", "MFU vs measured ceiling (model FLOPs)",
              "MFU vs measured ceiling (executed)",
              mem_label, "mem vs stock eager", "mem vs stock + compile", "CPU ms/step"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['variant']} | {r['ms_per_step']:.1f} | {r['tokens_per_s']:,.0f} | "
              f"{times_(r['speedup_vs_stock_eager'])} | {times_(r['speedup_vs_stock_compile'])} | "
              f"{pct(r['mfu_model_datasheet'])} | {pct(r['mfu_executed_datasheet'])} | {pct(r['mfu_model'])} | "
              f"{pct(r['mfu_executed'])} | "
              f"{r['peak_mem_gib']:.3f} | {times_(r['mem_vs_stock_eager'])} | {times_(r['mem_vs_stock_compile'])} | "
              f"{r['cpu_ms_per_step']:.0f} |")
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "device": dev_name, "precision": precision,
              "peak_tflops": measured, "measured_matmul_tflops": measured, "datasheet_peak_tflops": sheet,
              "datasheet_peak_source": sheet_label, "flop_convention": FLOP_CONVENTION, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
