"""The evaluation report: seed aggregation, the pretrained-vs-random verdict, the markdown table
and the pictures (confusion matrices, learning curves). Pure functions over plain dicts; files are
written only by the `write_*`/`plot_*` functions, to the paths they are given.

Shapes used throughout:
- a run: {task: {metric: value}}, the test metrics of one fine-tuned model (one seed);
- an aggregate: {task: {metric: {"mean", "std", "n"}}, "mean_score": {...}}, where every task
  also carries "score" (metrics.task_score) and "mean_score" is the per-run mean of the task
  scores, aggregated over runs.
Spread is the sample standard deviation over seeds (ddof=1); with one run it is 0 and n=1 says so.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from bertops.evaluate.metrics import task_score


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample std (ddof=1; 0 for one value) and n."""
    if not values:
        raise ValueError("no values to summarize")
    vals = [float(v) for v in values]
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": statistics.fmean(vals), "std": std, "n": len(vals)}


def format_mean_std(stat: Mapping[str, float], digits: int = 3) -> str:
    """'0.812 ± 0.013' for several runs, '0.812' for one (no spread was measured)."""
    if stat.get("n", 1) > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def aggregate_runs(runs: Sequence[Mapping[str, Mapping[str, float]]],
                   task_types: Mapping[str, str],
                   task_metric: Mapping[str, str] | None = None) -> dict:
    """Mean/std over runs of every metric of every task, of each task's score and of the mean score."""
    if not runs:
        raise ValueError("no runs to aggregate")
    out: dict = {}
    mean_scores = []
    for run in runs:
        missing = set(task_types) - set(run)
        if missing:
            raise ValueError(f"run has no metrics for tasks {sorted(missing)}")
        mean_scores.append(statistics.fmean(
            task_score(task_types[t], run[t], (task_metric or {}).get(t)) for t in task_types))
    for task, ttype in task_types.items():
        names = list(runs[0][task])
        out[task] = {name: summarize([run[task][name] for run in runs]) for name in names}
        out[task]["score"] = summarize(
            [task_score(ttype, run[task], (task_metric or {}).get(task)) for run in runs])
    out["mean_score"] = summarize(mean_scores)
    return out


VERDICT_RULE = ("paired bootstrap of pretrained - random-init over seeds and test examples; "
                "win when the 95% interval is above 0, loss when below, tie otherwise")


def verdict(boot: Mapping, tasks: Sequence[str], majority: Mapping[str, float] | None = None) -> dict:
    """The verdict from bootstrap.paired_bootstrap's result: per task the difference pretrained -
    random-init, its interval and the outcome (win / tie / loss; "n/a" for a task left out of
    the bootstrap), the counts, and the same for the mean over the bootstrapped tasks."""
    from bertops.evaluate.bootstrap import outcome

    out_tasks = {}
    for t in tasks:
        b = boot["tasks"].get(t)
        if b is None:
            out_tasks[t] = {"outcome": "n/a"}
            continue
        out_tasks[t] = {"difference": b["difference"], "ci_low": b["low"], "ci_high": b["high"],
                        "outcome": outcome(b["low"], b["high"])}
        if majority and t in majority:
            out_tasks[t]["majority"] = majority[t]
    m = boot["mean"]
    counts = [v["outcome"] for v in out_tasks.values()]
    return {"rule": VERDICT_RULE, "level": boot["level"], "n_boot": boot["n_boot"], "tasks": out_tasks,
            "mean_score": {"difference": m["difference"], "ci_low": m["low"], "ci_high": m["high"],
                           "outcome": outcome(m["low"], m["high"]),
                           "tasks": [t for t in tasks if t in boot["tasks"]]},
            "wins": counts.count("win"), "ties": counts.count("tie"), "losses": counts.count("loss")}


# --- markdown ---------------------------------------------------------------------------------

def score_table(aggregates: Mapping[str, Mapping], tasks: Sequence[str],
                primary: Mapping[str, str] | None = None) -> str:
    """One row per model, one column per task (its score), plus the mean score."""
    head = ["model"] + [f"{t} ({(primary or {}).get(t, 'score')})" for t in tasks] + ["mean score", "runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, agg in aggregates.items():
        cells = [name] + [format_mean_std(agg[t]["score"]) if t in agg else "n/a" for t in tasks]
        ms = agg.get("mean_score")
        n = next((agg[t]["score"]["n"] for t in tasks if t in agg), 0)
        cells += [format_mean_std(ms), str(ms["n"])] if ms else ["n/a", str(n)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(aggregates: Mapping[str, Mapping], task: str) -> str:
    """All metrics of one task, one row per model."""
    names = [k for k in next(iter(aggregates.values()))[task] if k != "score"]
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for model, agg in aggregates.items():
        if task not in agg:
            continue
        lines.append(f"| {model} | " + " | ".join(format_mean_std(agg[task][n]) for n in names) + " |")
    return "\n".join(lines)


def verdict_table(verdict: Mapping, aggregates: Mapping[str, Mapping], pretrained: str,
                  random_init: str) -> str:
    """One row per task and one for the mean score: both encoders, the difference, its interval,
    the outcome."""
    pct = round(100 * verdict["level"])
    floor = any("majority" in v for v in verdict["tasks"].values())
    lines = [f"| task | {pretrained} | {random_init} | difference | {pct}% interval |"
             + (" majority |" if floor else "") + " outcome |",
             "|---|---|---|---|---|" + ("---|" if floor else "") + "---|"]

    def row(name, pre, rnd, v, maj=""):
        if v["outcome"] == "n/a":
            diff = ci = "n/a"
        else:
            diff, ci = f"{v['difference']:+.3f}", f"[{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
        cells = [name, format_mean_std(pre), format_mean_std(rnd), diff, ci] + ([maj] if floor else [])
        return "| " + " | ".join(cells + [v["outcome"]]) + " |"

    for task, v in verdict["tasks"].items():
        maj = f"{v['majority']:.3f}" if "majority" in v else ""
        lines.append(row(task, aggregates[pretrained][task]["score"], aggregates[random_init][task]["score"],
                         v, maj))
    lines.append(row("**mean score**", aggregates[pretrained]["mean_score"],
                     aggregates[random_init]["mean_score"], verdict["mean_score"]))
    return "\n".join(lines)


def dropout_str(dropout: float | None) -> str:
    """A fine-tuning encoder dropout as the report and run folders name it (None: the checkpoint's)."""
    return "config" if dropout is None else f"{dropout:g}"


def _point(g: Mapping) -> tuple:
    """A grid entry's (lr[, dropout]) as the tables show it."""
    return (g["lr"], dropout_str(g["encoder_dropout"])) if "encoder_dropout" in g else (g["lr"],)


def _label(p: tuple) -> str:
    return f"lr {p[0]:g}" + (f", dropout {p[1]}" if len(p) > 1 else "")


def lr_table(selection: Mapping[str, Mapping]) -> str:
    """The fine-tuning rates (and encoder dropouts, when chosen too) tried per encoder: validation
    score of each, the chosen one in bold."""
    points = list(dict.fromkeys(_point(g) for s in selection.values() for g in s["grid"]))
    lines = ["| encoder | " + " | ".join(_label(p) for p in points) + " | chosen |",
             "|---|" + "---|" * (len(points) + 1)]
    for name, s in selection.items():
        by_point = {_point(g): g["validation_score"] for g in s["grid"]}
        chosen = _point({"lr": s["chosen"], **({"encoder_dropout": s["encoder_dropout"]}
                                              if "encoder_dropout" in s else {})})
        cells = [(f"**{by_point[p]:.3f}**" if p == chosen else f"{by_point[p]:.3f}") if p in by_point else ""
                 for p in points]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_label(chosen).removeprefix('lr ')} |")
    return "\n".join(lines)


def task_lr_table(selection: Mapping[str, Mapping]) -> str:
    """Each task's point per encoder (evaluate.lr_choice "task"): the task's validation score at every
    grid point, in grid order, its chosen one in bold. "" when no encoder chose per task."""
    chosen = {name: s for name, s in selection.items() if s.get("tasks")}
    if not chosen:
        return ""
    points = list(dict.fromkeys(_point(g) for s in chosen.values() for g in s["grid"]))
    tasks = list(dict.fromkeys(t for s in chosen.values() for t in s["tasks"]))
    lines = [f"Per task, the encoder's runs at the point best on that task's validation score (same seeds); "
             f"cells: {' / '.join(_label(p) for p in points)}, the chosen in bold.", "",
             "| task | " + " | ".join(chosen) + " |", "|---|" + "---|" * len(chosen)]
    for t in tasks:
        cells = []
        for s in chosen.values():
            scores = {_point(g): g["task_scores"][t] for g in s["grid"]}
            cells.append(" / ".join((f"**{scores[p]:.3f}**" if p == _point(s["tasks"][t]) else f"{scores[p]:.3f}")
                                    if p in scores else "–" for p in points))
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lr_rule(selection: Mapping[str, Mapping]) -> str:
    """How the rates in lr_table were chosen: at the first seed, or by the mean over the first seeds."""
    seeds = next((g["seeds"] for s in selection.values() for g in s["grid"] if "seeds" in g), None)
    if any(s.get("tasks") for s in selection.values()):
        at = f"seeds {', '.join(map(str, seeds))}" if seeds else "the first seed"
        return (f"Each encoder is fine-tuned at every rate at {at} with the same budget (the test split is "
                "not read). Per task (evaluate.lr_choice task, BERT's protocol): each task's scores come from "
                "the encoder's runs at the rate best on that task's validation gate examples (averaged over "
                "the seeds; second table); the other seeds run at every rate some task chose. The mean over "
                "tasks (first table) sets the encoder's one rate: its full fine-tuning row among the ways to "
                "adapt it.")
    if not seeds:
        return ("Each encoder is fine-tuned at every rate at the first seed with the same budget; the "
                "mean task score on the validation gate examples picks its rate (the test split is not "
                "read); every seed then runs at that rate, the first seed's run being the grid's.")
    return (f"Each encoder is fine-tuned at every rate at seeds {', '.join(map(str, seeds))} with the same "
            "budget; the mean task score on the validation gate examples, averaged over those seeds "
            "(shown), picks its rate (the test split is not read); the other seeds then run at that rate, "
            "the grid's runs at the chosen rate being those seeds' runs.")


def render_report(aggregates: Mapping[str, Mapping], tasks: Sequence[str], *,
                  primary: Mapping[str, str], notes: Sequence[str] = (),
                  verdicts: Mapping | None = None, lr_selection: Mapping[str, Mapping] | None = None,
                  pretrained: str = "pretrained", random_init: str = "random_init",
                  plots: Sequence[str] = ()) -> str:
    parts = ["# Evaluation", "", *notes, "", "## Scores (mean ± std over seeds)", "",
             score_table(aggregates, tasks, primary), ""]
    if lr_selection and any(s["grid"] for s in lr_selection.values()):
        per_task = task_lr_table(lr_selection)
        parts += ["## Learning rate per encoder, chosen on validation", "",
                  lr_rule(lr_selection),
                  "", lr_table(lr_selection), "", *([per_task, ""] if per_task else [])]
    if verdicts:
        c = verdicts
        parts += ["## Does pretraining help?", "",
                  (f"Rule: {c['rule']} ({c['n_boot']} resamples; the same test examples and seeds for both "
                   "encoders in each). The mean-score row bootstraps the mean over tasks "
                   f"({', '.join(c['mean_score']['tasks'])})."), "",
                  f"**Pretrained vs random-init: {c['wins']} wins, {c['ties']} ties, {c['losses']} losses; "
                  f"mean score {c['mean_score']['difference']:+.3f} "
                  f"[{c['mean_score']['ci_low']:+.3f}, {c['mean_score']['ci_high']:+.3f}] "
                  f"({c['mean_score']['outcome']}).**", "",
                  verdict_table(verdicts, aggregates, pretrained, random_init), ""]
    parts += ["## All metrics per task", ""]
    for task in tasks:
        parts += [f"### {task}", "", detail_table(aggregates, task), ""]
    if plots:
        parts += ["## Plots", ""] + [f"![{Path(p).stem}](plots/{Path(p).name})" for p in plots] + [""]
    return "\n".join(parts)


# --- pictures ---------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(cm: Sequence[Sequence[int]], labels: Sequence, title: str, path: str | Path) -> Path:
    """Counts with rows = gold, columns = predicted, each cell annotated."""
    plt = _pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.0 * n + 2))
    im = ax.imshow(cm, cmap="Blues")
    names = [str(lab) for lab in labels]
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    top = max((max(row) for row in cm), default=0)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i][j]), ha="center", va="center",
                    color="white" if cm[i][j] > top / 2 else "black")
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Lightning CSVLogger's metrics.csv as {column: [(step, value), ...]}, empty cells skipped."""
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if step in (None, ""):
                continue
            for col, val in row.items():
                if col in ("step", "epoch") or val in (None, ""):
                    continue
                try:
                    v = float(val)
                except ValueError:
                    continue
                if not math.isnan(v):
                    series.setdefault(col, []).append((float(step), v))
    return series


def task_columns(columns: Sequence[str], task: str) -> list[str]:
    """The logged columns that belong to `task`: the name as one segment of a '/', '_' or '.' path."""
    import re

    pat = re.compile(rf"(^|[/._]){re.escape(task)}($|[/._])")
    return sorted(c for c in columns if pat.search(c))


def plot_learning_curves(runs: Mapping[str, Mapping[str, list[tuple[float, float]]]], task: str,
                         path: str | Path) -> Path | None:
    """One panel per logged column of `task` (losses, validation metrics), one line per run.

    `runs` maps a run label (e.g. "pretrained seed 1") to its read_metrics_csv() series.
    Returns None when no run logged anything for the task.
    """
    cols = sorted({c for series in runs.values() for c in task_columns(list(series), task)
                   if not c.endswith("score")})  # "score" repeats the task's main metric
    if not cols:
        return None
    plt = _pyplot()
    ncols = min(3, len(cols))
    nrows = math.ceil(len(cols) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.3 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    # one colour per model ("<model> seed <n>" labels), one line style per seed
    models = list(dict.fromkeys(label.rsplit(" seed", 1)[0] for label in runs))
    seen: dict[str, int] = {}
    styles = {}
    for label in runs:
        model = label.rsplit(" seed", 1)[0]
        k = seen[model] = seen.get(model, -1) + 1
        styles[label] = (f"C{models.index(model) % 10}", ("-", "--", ":", "-.")[k % 4])
    for ax in flat[len(cols):]:
        ax.set_visible(False)
    for ax, col in zip(flat, cols):
        for label, series in runs.items():
            pts = series.get(col)
            if pts:
                color, style = styles[label]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None,
                        label=label, color=color, linestyle=style)
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    flat[0].legend(fontsize=7)
    fig.suptitle(f"{task}: fine-tuning curves")
    return _save(fig, path)


def write_curves_csv(runs: Mapping[str, Mapping[str, list[tuple[float, float]]]], task: str,
                     path: str | Path) -> Path | None:
    """Long-format CSV (run, metric, step, value) of a task's curves, for `dvc plots`."""
    rows = [(label, col, step, value)
            for label, series in runs.items()
            for col in task_columns(list(series), task)
            for step, value in series[col]]
    if not rows:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["run", "metric", "step", "value"])
        w.writerows(rows)
    return path


def _save(fig, path) -> Path:
    """Write a figure as PNG (creating its folder) and free it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path
