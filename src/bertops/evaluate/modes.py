"""Rows of the evaluation table that compare ways of adapting one encoder to the tasks: full
fine-tuning, adapters (a LoRA adapter per task, frozen encoder) and frozen features (the encoder's
layers as fixed features, `feature_layers`), each with its score, the parameters one task trains
(% of the encoder) and the bytes a deployment stores per task (bertops.train.adapters.parameter_costs);
and the distill stage's student ("student": not fitted here, read from distill.out_dir).

    VARIANTS: the variant names `evaluate.modes` takes -> label and finetune overrides
    fit_variant(params, ft, name, init_dir, run_dir, seed, tasks) -> ({task: model dir}, fit result)
    row(name, fit_result, test_run, task_types, task_metric) -> dict
    render(rows) -> markdown table
    fit_all(params, ft, names, init_dir, work, seed, tasks, full_lr) -> [(name, model dirs, fit result)]
    score_all(fitted, score, task_types, task_metric) -> {"rows", "markdown"}   (the test split)
    report_lines(scored, seed) -> the report's lines for that table
    run(...): fit_all then score_all

The encoder, seed and budget (`finetune:` as the evaluate stage caps it) are the same for every
row; only the mode differs. Full fine-tuning uses the encoder learning rate it is given (the
evaluate stage passes the rate it chose on validation), adapters finetune.adapters.learning_rate,
frozen features train only heads (finetune.head_learning_rate). Every variant is fitted (train
and validation splits) before any is scored on the test split, as the evaluate stage requires.
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


def variant(name: str) -> tuple[str, dict]:
    if name == "feature_extraction":
        name = "feature_extraction:last"
    if name not in VARIANTS:
        raise ValueError(f"unknown fine-tuning variant {name!r}; one of {sorted(VARIANTS)}")
    return VARIANTS[name]


def fit_variant(params, ft, name: str, init_dir: str | Path, run_dir: Path, seed: int,
                tasks: list[str]) -> tuple[dict[str, Path], dict]:
    """Fine-tune `init_dir` in variant `name` with budget `ft` (the finetune section, any lr set)."""
    from bertops.train.finetune import fit_multitask

    _, overrides = variant(name)
    run_params = params.model_copy(update={"finetune": ft.model_copy(update=overrides)})
    result = fit_multitask(run_params, init_dir, run_dir, seed, tasks=tasks, loggers=None)
    return {t: Path(d) for t, d in result["model_dirs"].items()}, result


def row(name: str, fit_result: Mapping, test_run: Mapping[str, Mapping[str, float]],
        task_types: Mapping[str, str], task_metric: Mapping[str, str] | None = None) -> dict:
    """One table row: the test score (mean over tasks of each task's main metric, as the main table),
    the validation gate score, trainable % of the encoder and bytes stored per task (means over tasks)."""
    from bertops.evaluate.metrics import task_score

    scores = {t: task_score(tt, test_run[t], (task_metric or {}).get(t)) for t, tt in task_types.items()}
    costs = fit_result["costs"]
    return {"variant": name, "model": variant(name)[0], "score": statistics.fmean(scores.values()),
            "tasks": scores, "validation_score": fit_result["gate"]["score"],
            "trainable_pct": costs["trainable_pct"], "bytes_per_task": costs["bytes_per_task"],
            "encoder_params": costs["encoder_params"]}


def _size(n: float) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n:.0f} B"


def render(rows: list[dict], tasks: list[str] | None = None) -> str:
    """Markdown: variant, test score (and per task), trainable % of the encoder, bytes per task."""
    tasks = tasks or (list(rows[0]["tasks"]) if rows else [])
    head = "| variant | score | " + " | ".join(tasks) + " | trainable (% of encoder) | stored per task |"
    sep = "|---|---:|" + "---:|" * len(tasks) + "---:|---:|"
    lines = [head, sep]
    for r in rows:
        per_task = " | ".join(f"{r['tasks'][t]:.3f}" for t in tasks)
        lines.append(f"| {r['model']} | {r['score']:.3f} | {per_task} | {r['trainable_pct']:.2f}% | "
                     f"{_size(r['bytes_per_task'])} |")
    return "\n".join(lines) + "\n"


def fit_all(params, ft, names: list[str], init_dir: str | Path, work: Path, seed: int, tasks: list[str],
            full_lr: float | None = None) -> list[tuple[str, dict[str, Path], dict]]:
    """Fine-tune each variant in `names` at one seed (train and validation splits only):
    [(name, {task: model dir}, fit result)]. full_lr: the "finetune" variant's encoder rate."""
    out = []
    for name in names:
        if name == "student":
            out.append(student(params))
            continue
        run_ft = ft.model_copy(update={"learning_rate": full_lr}) if full_lr and name == "finetune" else ft
        dirs, result = fit_variant(params, run_ft, name, init_dir, Path(work) / name.replace(":", "-"), seed, tasks)
        out.append((name, dirs, result))
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
              task_types: Mapping[str, str], task_metric: Mapping[str, str] | None = None) -> dict:
    """Score `fit_all`'s models (`score(model_dirs)` -> {task: test metrics}), delete them, and
    return {"rows": [row...], "markdown": render(rows)}."""
    import shutil

    rows = []
    for name, dirs, result in fitted:
        rows.append(row(name, result, score(dirs), task_types, task_metric))
        for d in set(dirs.values()) if name != "student" else ():  # the student is the distill stage's output
            shutil.rmtree(d, ignore_errors=True)
    return {"rows": rows, "markdown": render(rows, list(task_types))}


def report_lines(scored: dict, seed: int) -> list[str]:
    """The evaluation report's lines for `score_all`'s table (none without rows)."""
    if not scored["rows"]:
        return []
    return ["", f"Ways to adapt our encoder (seed {seed}, the same budget; trainable parameters as % of the "
            "encoder's, and bytes stored per task); the distilled student's % is of its teacher's encoder:", "",
            scored["markdown"]]


def run(params, ft, names: list[str], init_dir: str | Path, work: Path, seed: int, tasks: list[str],
        score: Callable[[dict[str, Path]], dict], task_types: Mapping[str, str],
        task_metric: Mapping[str, str] | None = None, full_lr: float | None = None) -> dict:
    """`fit_all` then `score_all`."""
    return score_all(fit_all(params, ft, names, init_dir, work, seed, tasks, full_lr), score, task_types, task_metric)
