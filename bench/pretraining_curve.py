"""How much pretraining is enough (issue 10, point 4): one pretraining run on a wall-clock budget,
snapshots of the encoder at fractions of it, and each snapshot fine-tuned against random init.

    .venv/bin/python bench/pretraining_curve.py --budget 1:00:00 --fractions 0.125 0.25 0.5 1 \\
        --lrs 1e-3 2e-3 --seeds 1 2 --jobs 2 --out bench/results/pretraining-curve-cpu-1h

Everything runs in a scratch workspace (--work, default /tmp/bertops-curve: a copy of params.yaml,
a link to data/), so the project's artifacts/ and params.yaml are not touched:
1. the tokenize stage (params.yaml's tokenizer and pretraining_data, task texts included);
2. one pretraining run with `pretrain.max_time = budget` (the lr schedule decays to zero at the end of
   the whole budget; the snapshots at earlier fractions are taken mid-schedule, as a curve of one run
   is, not separately annealed runs), saving the encoder (a standard BertForPreTraining dir) when
   the training clock passes each fraction; the steps and tokens reached at each are recorded;
3. the finetune stage (params.yaml's `finetune:` budget) for every snapshot and for random init, at
   every lr of --lrs and every seed of --seeds; an encoder's score is its best lr's mean over seeds
   of the validation score (selection and gate examples together). The test split is never read.
Writes OUT.md (table), OUT.json and OUT.png (validation score against pretraining minutes, with the
random-init line). -S KEY=VALUE overrides params (e.g. -S pretrain.batch_size=64).
A time budget depends on the machine: the figure is for the machine it ran on (say which, and
whether its cores were shared).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stage(work: Path, name: str, overrides: dict, log: Path, threads: int | None = None) -> None:
    cmd = [sys.executable, "-m", "bertops.stages", name, "--params", str(work / "params.yaml")]
    for k, v in overrides.items():
        cmd += ["-S", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    env = {**os.environ, "BERTOPS_TRACKING": "off", "PYTHONPATH": str(REPO / "src")}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "w") as f:
        subprocess.run(cmd, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)


def pretrain_with_snapshots(work: Path, budget: float | None, fractions: list[float], overrides: dict,
                            max_steps: int | None = None) -> list[dict]:
    """One pretraining run of `budget` seconds (or, with max_steps, of that many steps: the same curve on
    any machine, whatever its load); the encoder saved at each fraction of it."""
    import lightning as L

    sys.path.insert(0, str(REPO / "src"))
    from bertops.config import load_params
    from bertops.train.pretrain import fit_pretraining

    os.environ["BERTOPS_TRACKING"] = "off"
    budget_keys = {"pretrain.max_time": None, "pretrain.max_steps": max_steps} if max_steps else \
        {"pretrain.max_time": budget}
    params = load_params(work / "params.yaml", {**overrides, **budget_keys,
                                                "pretrain.out_dir": str(work / "pretrain")})
    tokenizer_dir = work / "artifacts" / "tokenizer"
    snapshots: list[dict] = []

    class Snapshots(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            elapsed = module.training_clock.elapsed()
            done = trainer.global_step / max_steps if max_steps else elapsed / budget
            for f in fractions:
                if f < 1 and done >= f and not any(s["fraction"] == f for s in snapshots):
                    out = work / f"snapshot-{f:g}"
                    module.model.save_pretrained(str(out))
                    shutil.copytree(tokenizer_dir, out, dirs_exist_ok=True)
                    snapshots.append({"fraction": f, "dir": str(out), "step": trainer.global_step,
                                      "tokens": module.tokens_reached() * trainer.world_size,
                                      "seconds": round(elapsed, 1)})

    p = params.pretrain
    result = fit_pretraining(params, work / "artifacts" / "pretraining_data", tokenizer_dir, p.out_dir,
                             callbacks=[Snapshots()])
    m = result["metrics"]
    snapshots.append({"fraction": 1.0, "dir": result["model_dir"], "step": m["global_step"],
                      "tokens": m["train_tokens"], "seconds": m["train_seconds_total"],
                      "mlm_accuracy": m["mlm_accuracy"], "mlm_loss": m["mlm_loss"], "nsp_accuracy": m["nsp_accuracy"]})
    return sorted(snapshots, key=lambda s: s["fraction"])


def finetune_score(work: Path, init_dir: str, random_init: bool, lr: float, seed: int, overrides: dict,
                   threads: int | None = None) -> dict:
    tag = f"{Path(init_dir).name}-{'random' if random_init else 'pretrained'}-{lr:g}-{seed}"
    out = work / "finetune" / tag
    stage(work, "finetune", {**overrides, "seed": seed, "finetune.init_dir": init_dir,
                             "finetune.random_init": random_init, "finetune.learning_rate": lr,
                             "finetune.out_dir": str(out)}, work / f"finetune-{tag}.log", threads)
    m = json.loads((out / "metrics.json").read_text())
    # selection: the validation part that chose the kept epoch (and here the lr); gate: the part that
    # chose nothing, reported.
    return {"selection": m["score"], "validation": m["gate"]["score"],
            "tasks": {t: v["score"] for t, v in m["gate"]["tasks"].items()}}


def all_fits(work: Path, encoders: list[tuple[str, bool]], lrs, seeds, overrides, jobs: int) -> dict:
    """Every (encoder, random_init, lr, seed) fine-tuning, `jobs` at a time. On 2 CPU cores two 1-thread
    fine-tunings of the tiny preset took ~65 s together, one 2-thread `finetune` stage ~56 s: ~1.7x the
    throughput (small matmuls scale poorly over threads). Each fit is seeded, so its score does not
    depend on what runs beside it."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    keys = [(d, r, lr, s) for d, r in encoders for lr in lrs for s in seeds]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(finetune_score, work, *k, overrides, threads): k for k in keys}
        for done, f in enumerate(as_completed(futures), 1):  # a fit takes about a minute: say each one
            d, r, lr, s = futures[f]
            print(f"fine-tuning {done}/{len(keys)}: {Path(d).name} {'random init' if r else 'pretrained'} "
                  f"lr {lr:g} seed {s}: validation {f.result()['validation']:.3f}", flush=True)
        return {k: f.result() for f, k in futures.items()}


def best_of_grid(fits: dict, init_dir, random_init, lrs, seeds) -> dict:
    grid = {}
    for lr in lrs:
        runs = [fits[(init_dir, random_init, lr, s)] for s in seeds]
        grid[lr] = {"selection": sum(r["selection"] for r in runs) / len(runs),
                    "validation": sum(r["validation"] for r in runs) / len(runs),
                    "per_seed": [r["validation"] for r in runs],
                    "tasks": {t: sum(r["tasks"][t] for r in runs) / len(runs) for t in runs[0]["tasks"]}}
    best = max(grid, key=lambda lr: grid[lr]["selection"])
    return {"lr": best, **grid[best], "grid": {str(k): v["selection"] for k, v in grid.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="1:00:00", help="pretraining wall time, seconds or HH:MM:SS")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="a step budget instead of --budget: snapshots at fractions of the steps")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 2e-3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1234])
    ap.add_argument("--jobs", type=int, default=1, help="fine-tunings run at once (threads split among them)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bertops-curve"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pretraining-curve")
    ap.add_argument("--fresh", action="store_true",
                    help="re-run the tokenize stage and the pretraining even if --work has their output")
    ap.add_argument("-S", dest="set", action="append", default=[], help="params override KEY=VALUE")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    import yaml

    from bertops.config import parse_duration

    budget = parse_duration(args.budget)
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    if not (work / "data").exists():
        (work / "data").symlink_to(REPO / "data")
    paths = {"tokenizer.out_dir": str(work / "artifacts/tokenizer"),
             "pretraining_data.out_dir": str(work / "artifacts/pretraining_data"),
             "pretraining_data.stats_path": str(work / "artifacts/tokenize/stats.json"),
             "pretraining_data.task_texts_path": str(work / "artifacts/tokenize/task_texts.jsonl")}
    if args.fresh or not (work / "artifacts/tokenize/stats.json").is_file():
        stage(work, "tokenize", {**overrides, **paths}, work / "tokenize.log")
    # The pretraining run is the long part: its snapshots are recorded, and a rerun with the same budget,
    # fractions and overrides (e.g. after a failed or interrupted fine-tuning) reuses them.
    record = work / "snapshots.json"
    # fine-tuning and evaluation keys do not change the pretraining
    key = {"budget": budget, "max_steps": args.max_steps, "fractions": sorted(set(args.fractions) | {1.0}),
           "overrides": {k: v for k, v in overrides.items() if not k.startswith(("finetune.", "evaluate."))}}
    old = json.loads(record.read_text()) if record.is_file() and not args.fresh else {}
    if old.get("key") == key:
        snapshots = old["snapshots"]
    else:
        snapshots = pretrain_with_snapshots(work, budget, key["fractions"], overrides, max_steps=args.max_steps)
        record.write_text(json.dumps({"key": key, "snapshots": snapshots}, indent=2))
    encoders = [(snapshots[-1]["dir"], True)] + [(s["dir"], False) for s in snapshots]
    fits = all_fits(work, encoders, args.lrs, args.seeds, overrides, args.jobs)
    random = best_of_grid(fits, snapshots[-1]["dir"], True, args.lrs, args.seeds)
    for s in snapshots:
        s["finetuned"] = best_of_grid(fits, s["dir"], False, args.lrs, args.seeds)
    result = {"budget_seconds": None if args.max_steps else budget, "max_steps": args.max_steps, "jobs": args.jobs,
              "load_average": os.getloadavg(), "machine": os.uname().nodename, "cpus": os.cpu_count(),
              "overrides": overrides, "lrs": args.lrs, "seeds": args.seeds, "random_init": random,
              "snapshots": snapshots}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    tasks = sorted(random["tasks"])
    what = f"{args.max_steps} steps" if args.max_steps else f"{budget:g} s"
    lines = [f"Pretraining budget {what}; validation (gate part) score at the lr of {args.lrs} best on the "
             f"selection part, mean of seeds {args.seeds}; random init: {random['validation']:.3f} "
             f"(lr {random['lr']:g}, per seed {', '.join(f'{v:.3f}' for v in random['per_seed'])})", "",
             "| fraction | minutes | steps | tokens | validation | vs random init | wins | "
             + " | ".join(tasks) + " |", "|---" * (7 + len(tasks)) + "|"]
    for s in snapshots:
        ft = s["finetuned"]
        wins = sum(ft["tasks"][t] > random["tasks"][t] for t in tasks)
        lines.append(f"| {s['fraction']:g} | {s['seconds'] / 60:.1f} | {s['step']} | {s['tokens']:,} | "
                     f"{ft['validation']:.3f} (lr {ft['lr']:g}) | "
                     f"{ft['validation'] - random['validation']:+.3f} | {wins}/{len(tasks)} | "
                     + " | ".join(f"{ft['tasks'][t]:.3f}" for t in tasks) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    # steps, not minutes: the same curve whatever the machine's speed (the table has the minutes)
    ax.plot([0] + [s["step"] for s in snapshots], [random["validation"]] + [s["finetuned"]["validation"]
            for s in snapshots], marker="o", label="pretrained")
    ax.axhline(random["validation"], color="grey", linestyle="--", label="random init")
    ax.set_xlabel("pretraining steps")
    ax.set_ylabel("validation score (mean of tasks)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
