"""Rows of the evaluation table that compare ways of adapting one encoder to the tasks: full
fine-tuning, adapters (a LoRA adapter per task, frozen encoder) and frozen features (the encoder's
layers as fixed features, `feature_layers`), each with its score, the parameters one task trains
(% of the encoder), the bytes a deployment stores per task (bertops.train.adapters.parameter_costs)
and its CPU latency at batch 1 (bertops.evaluate.latency); and the distill stage's student
("student": not fitted here, read from distill.out_dir).

    VARIANTS: the variant names `evaluate.modes` takes -> label and finetune overrides
    RATE_KEY: the learning rate each kind of variant trains with (a finetune key)
    fit_variant(params, ft, name, init_dir, run_dir, seed, tasks, lr=None, fit=None) -> ({task: model dir}, fit result)
    choose_rate(params, ft, name, grid, init_dir, run_dir, seed, tasks, fit=None) -> (dirs, fit result)
    row(name, fit_result, test_run, task_types, task_metric, latency_ms=None) -> dict
    render(rows) -> markdown table
    fit_all(params, ft, names, init_dir, work, seed, tasks, lrs, grids, reuse, fit) -> [(name, model dirs, fit result)]
    score_all(fitted, score, task_types, task_metric, latency) -> {"rows", "markdown", "margin"}   (the test split)
    margin(rows) -> adapters - full fine-tuning, on test and on validation
    row_metrics(rows) -> {metric_name(variant): {"score", "p50_ms"}}: the rows' numbers for MLflow and DVC
    report_lines(scored, seed, latency_conditions) -> the report's lines for that table
    run(...): fit_all then score_all

The encoder, seed and budget (`finetune:` as the evaluate stage caps it) are the same for every
row; only the mode and its learning rate differ. Each row trains at one rate (`lrs`, default the
finetune key in RATE_KEY), or at each rate of its grid (`grids`, 2+ rates), keeping the run with
the best validation gate score (ties: the first rate), as the evaluate stage chooses each
encoder's rate: the evaluate stage gives full fine-tuning the encoder rate it chose on validation
(evaluate.lr_grid) and adapters their own grid (evaluate.adapters_lr_grid), so that neither is
compared at a rate tuned for the other. Every variant is fitted (train and validation splits)
before any is scored on the test split, as the evaluate stage requires.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from pathlib import Path

# name -> (row label, finetune overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    # heads on the last layer for both (adapters need it; finetune.feature_layers may name another)
    "finetune": ("full fine-tuning", {"mode": "finetune", "feature_layers": "last"}),
    "adapters": ("adapters (LoRA per task)", {"mode": "adapters", "feature_layers": "last"}),
    **{f"feature_extraction:{layers}": (f"frozen features ({layers})",
                                        {"mode": "feature_extraction", "feature_layers": layers})
       for layers in ("last", "second_to_last", "sum_last_four", "concat_last_four", "weighted_sum")},
    # not fitted here: the distill stage's student (distill.out_dir), scored in the same table
    "student": ("distilled student", {}),
}

# the learning rate of what each kind of variant trains (its other groups keep their finetune rates)
RATE_KEY = {"finetune": "learning_rate", "adapters": "adapters.learning_rate",
            "feature_extraction": "head_learning_rate"}


def variant(name: str) -> tuple[str, dict]:
    if name == "feature_extraction":
        name = "feature_extraction:last"
    if name not in VARIANTS:
        raise ValueError(f"unknown fine-tuning variant {name!r}; one of {sorted(VARIANTS)}")
    return VARIANTS[name]


def rate_key(name: str) -> str:
    return RATE_KEY[variant(name)[1]["mode"]]


def rate(ft, name: str) -> float:
    """The rate variant `name` trains at under the finetune section `ft`."""
    key = rate_key(name)
    return ft.adapters.learning_rate if key == "adapters.learning_rate" else getattr(ft, key)


def with_rate(ft, name: str, lr: float | None):
    """`ft` with variant `name`'s rate set to lr (None: unchanged)."""
    if lr is None:
        return ft
    key = rate_key(name)
    if key == "adapters.learning_rate":
        return ft.model_copy(update={"adapters": ft.adapters.model_copy(update={"learning_rate": lr})})
    return ft.model_copy(update={key: lr})


def fit_variant(params, ft, name: str, init_dir: str | Path, run_dir: Path, seed: int,
                tasks: list[str], lr: float | None = None, fit: Callable[..., dict] | None = None,
                ) -> tuple[dict[str, Path], dict]:
    """Fine-tune `init_dir` in variant `name` with budget `ft` (the finetune section) at rate lr
    (None: ft's), with `fit` (fit_multitask's signature; None: fit_multitask here). The fit result
    gains "lr": the rate it trained at."""
    if fit is None:
        from bertops.train.finetune import fit_multitask as fit

    _, overrides = variant(name)
    ft = with_rate(ft, name, lr)
    run_params = params.model_copy(update={"finetune": ft.model_copy(update=overrides)})
    result = fit(run_params, init_dir, run_dir, seed, tasks=tasks, loggers=None)
    return {t: Path(d) for t, d in result["model_dirs"].items()}, {**result, "lr": rate(ft, name)}


def choose_rate(params, ft, name: str, grid: list[float], init_dir: str | Path, run_dir: Path, seed: int,
                tasks: list[str], fit: Callable[..., dict] | None = None) -> tuple[dict[str, Path], dict]:
    """Fit variant `name` at every rate of `grid` and keep the best on the validation gate score
    (ties: the first rate; bertops.evaluate.rates); the others are deleted. The kept fit result gains
    "lr_selection": [{"lr", "validation_score"}] in grid order."""
    from bertops.evaluate import rates

    def fit_at(lr: float):
        d = Path(run_dir) / f"lr{lr:g}"
        return (*fit_variant(params, ft, name, init_dir, d, seed, tasks, lr, fit), d)

    sel = rates.choose(grid, fit_at)
    return sel.model_dirs, {**sel.result, "lr_selection": sel.lr_selection()}


def row(name: str, fit_result: Mapping, test_run: Mapping[str, Mapping[str, float]],
        task_types: Mapping[str, str], task_metric: Mapping[str, str] | None = None,
        latency_ms: Mapping[str, float] | None = None) -> dict:
    """One table row: the test score (mean over tasks of each task's main metric, as the main table),
    the validation gate score, trainable % of the encoder and bytes stored per task (means over tasks),
    the rate it trained at (and the grid it was chosen from) and its latency (None: not measured)."""
    from bertops.evaluate.metrics import task_score

    scores = {t: task_score(tt, test_run[t], (task_metric or {}).get(t)) for t, tt in task_types.items()}
    costs = fit_result["costs"]
    out = {"variant": name, "model": variant(name)[0], "score": statistics.fmean(scores.values()),
           "tasks": scores, "validation_score": fit_result["gate"]["score"],
           "trainable_pct": costs["trainable_pct"], "bytes_per_task": costs["bytes_per_task"],
           "encoder_params": costs["encoder_params"], "lr": fit_result.get("lr"),
           "latency_ms": dict(latency_ms) if latency_ms else None}
    if fit_result.get("lr_selection"):
        out["lr_selection"] = list(fit_result["lr_selection"])
    return out


def _size(n: float) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n:.0f} B"


def render(rows: list[dict], tasks: list[str] | None = None) -> str:
    """Markdown: variant, test score (and per task), trainable % of the encoder, bytes per task, the
    rate trained at, and batch-1 latency p50 / p95 when measured."""
    tasks = tasks or (list(rows[0]["tasks"]) if rows else [])
    timed = any(r.get("latency_ms") for r in rows)
    head = "| variant | score | " + " | ".join(tasks) + " | trainable (% of encoder) | stored per task | lr |"
    sep = "|---|---:|" + "---:|" * len(tasks) + "---:|---:|---:|"
    if timed:
        head, sep = head + " p50 ms | p95 ms |", sep + "---:|---:|"
    lines = [head, sep]
    for r in rows:
        per_task = " | ".join(f"{r['tasks'][t]:.3f}" for t in tasks)
        lr = f"{r['lr']:g}" + (" (chosen)" if r.get("lr_selection") else "") if r.get("lr") else "n/a"
        line = (f"| {r['model']} | {r['score']:.3f} | {per_task} | {r['trainable_pct']:.2f}% | "
                f"{_size(r['bytes_per_task'])} | {lr} |")
        if timed:
            lat = r.get("latency_ms")
            line += f" {lat['p50_ms']:.1f} | {lat['p95_ms']:.1f} |" if lat else " n/a | n/a |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def fit_all(params, ft, names: list[str], init_dir: str | Path, work: Path, seed: int, tasks: list[str],
            lrs: Mapping[str, float] | None = None, grids: Mapping[str, list[float]] | None = None,
            reuse: Mapping[str, tuple[dict[str, Path], dict]] | None = None,
            fit: Callable[..., dict] | None = None) -> list[tuple[str, dict[str, Path], dict]]:
    """Fine-tune each variant in `names` at one seed (train and validation splits only):
    [(name, {task: model dir}, fit result)]. lrs: {variant: its rate} (default: ft's);
    grids: {variant: rates} fitted each, the best on validation kept (2+ rates; `choose_rate`);
    reuse: {variant: (dirs, fit result)} already fitted elsewhere (the evaluate stage's lr-grid run
    of full fine-tuning), taken as they are, not fitted again. fit: as in fit_variant."""
    out = []
    for name in names:
        run_dir = Path(work) / name.replace(":", "-")
        grid = list(dict.fromkeys((grids or {}).get(name) or []))
        if name == "student":
            out.append(student(params))
        elif reuse and name in reuse:
            out.append((name, *reuse[name]))
        elif len(grid) > 1:
            out.append((name, *choose_rate(params, ft, name, grid, init_dir, run_dir, seed, tasks, fit)))
        else:
            lr = grid[0] if grid else (lrs or {}).get(name)
            out.append((name, *fit_variant(params, ft, name, init_dir, run_dir, seed, tasks, lr, fit)))
    return out


def student(params) -> tuple[str, dict[str, Path], dict]:
    """The distill stage's student as a fitted variant: its model dir and metrics.json, with its
    trainable % given against the teacher's encoder (the student is trained whole)."""
    import json

    from bertops.errors import BertopsError

    out = Path(params.distill.out_dir)
    if not (out / "metrics.json").exists():
        raise BertopsError(f"evaluate: no distilled student at {out} (run the distill stage, or drop "
                           "'student' from evaluate.modes)")
    m = json.loads((out / "metrics.json").read_text())
    tasks = {t: {**c, "trainable_pct": round(100.0 * c["trainable_params"] / m["teacher_params"], 4)}
             for t, c in m["costs"]["tasks"].items()}
    from bertops.train.adapters import summary

    m["costs"] = {**m["costs"], "tasks": tasks, **summary(tasks)}
    return "student", {t: out / "model" for t in tasks}, m


def score_all(fitted: list[tuple[str, dict[str, Path], dict]], score: Callable[[dict[str, Path]], dict],
              task_types: Mapping[str, str], task_metric: Mapping[str, str] | None = None,
              latency: Callable[[dict[str, Path]], dict] | None = None) -> dict:
    """Score `fit_all`'s models (`score(model_dirs)` -> {task: test metrics}; `latency(model_dirs)` ->
    bertops.evaluate.latency.measure's dict, or None), delete them (the student is the distill
    stage's output: kept), and return {"rows": [row...], "markdown": render(rows), "margin": margin(rows)}."""
    import shutil

    rows = []
    for name, dirs, result in fitted:
        lat = latency(dirs) if latency else None
        rows.append(row(name, result, score(dirs), task_types, task_metric, lat))
        for d in set(dirs.values()) if name != "student" else ():
            shutil.rmtree(d, ignore_errors=True)
    return {"rows": rows, "markdown": render(rows, list(task_types)), "margin": margin(rows)}


def margin(rows: list[dict]) -> dict:
    """Adapters minus full fine-tuning, mean task score on test and on the validation gate examples,
    with the rate each trained at ({} without both rows)."""
    by = {r["variant"]: r for r in rows}
    if not {"adapters", "finetune"} <= set(by):
        return {}
    a, f = by["adapters"], by["finetune"]
    return {"adapters_minus_full": {"test": a["score"] - f["score"],
                                    "validation": a["validation_score"] - f["validation_score"],
                                    "adapters_lr": a.get("lr"), "full_lr": f.get("lr")}}


def metric_name(name: str) -> str:
    """Variant `name` as a metric key valid for MLflow (on every OS) and DVC (whose `file:key`
    syntax reserves ':'): "feature_extraction:last" -> "feature_extraction_last"."""
    return name.replace(":", "_")


def row_metrics(rows: list[dict]) -> dict:
    """The numbers each row is compared by, keyed by metric_name: {name: {"score": test score,
    "p50_ms": batch-1 p50 latency (absent when not measured)}}."""
    out = {}
    for r in rows:
        lat = r.get("latency_ms") or {}
        out[metric_name(r["variant"])] = {"score": r["score"], **({"p50_ms": lat["p50_ms"]} if lat else {})}
    return out


def report_lines(scored: dict, seed: int, latency_conditions: Mapping | None = None) -> list[str]:
    """The evaluation report's lines for `score_all`'s table (none without rows)."""
    if not scored["rows"]:
        return []
    lines = ["", f"Ways to adapt our encoder (seed {seed}, the same budget; trainable parameters as % of the "
             "encoder's, and bytes stored per task); the distilled student's % is of its teacher's encoder. "
             "lr: the rate the row trained (full fine-tuning: the encoder's; adapters: the adapters'; frozen "
             "features: the heads'), \"(chosen)\" when picked from a grid on validation.", ""]
    m = (scored.get("margin") or {}).get("adapters_minus_full")
    if m:
        lines[1] += (f" Adapters minus full fine-tuning: {m['test']:+.3f} on test ({m['validation']:+.3f} on "
                     f"validation), each at its own rate ({m['adapters_lr']:g} vs {m['full_lr']:g}).")
    if latency_conditions and any(r.get("latency_ms") for r in scored["rows"]):
        c = latency_conditions
        lines[1] += (f" Latency: CPU, in process (tokenize + forward + decode, no HTTP), batch 1, "
                     f"{c['requests']} requests (after {c['warmup']} untimed), the same for every row, "
                     f"{c['threads']} torch thread(s) on {c['cpu_count']} cores, load average "
                     f"{c['loadavg_1m']} at the start: compare rows of this table, not runs.")
    return lines + [scored["markdown"]]


def run(params, ft, names: list[str], init_dir: str | Path, work: Path, seed: int, tasks: list[str],
        score: Callable[[dict[str, Path]], dict], task_types: Mapping[str, str],
        task_metric: Mapping[str, str] | None = None, lrs: Mapping[str, float] | None = None,
        grids: Mapping[str, list[float]] | None = None, latency: Callable[[dict[str, Path]], dict] | None = None,
        ) -> dict:
    """`fit_all` then `score_all`."""
    return score_all(fit_all(params, ft, names, init_dir, work, seed, tasks, lrs, grids), score, task_types,
                     task_metric, latency)
