"""The fine-tunings of stage `evaluate`: which encoders, at what budget, and each encoder's
learning rate (and, with `evaluate.encoder_dropout_grid`, fine-tuning dropout) chosen on validation.

`choose_lrs` fine-tunes every encoder at every `evaluate.lr_grid` rate (times every
`evaluate.encoder_dropout_grid` value) at the first `evaluate.lr_seeds` seeds, with the same step
budget, and keeps the point whose models score best, on average over those seeds, on the validation
gate examples (the part of each task's validation split that did not choose the kept epoch; see
bertops.train.finetune.validation_parts). It reads the train and validation splits only: the test
split is scored later, by the stage, on models whose rate is already fixed. The models of the
chosen rate are kept (they are that encoder's runs at those seeds); the others are deleted (the rule
of bertops.evaluate.rates.choose, which the adapters' grid uses too). One seed decides a rate by
noise when two rates are close (make run Q: 0.517 vs 0.516 on 200 gate examples a task, seed
1234), so lr_seeds 2+ averages that out, and its runs are not wasted: they are seeds of the verdict.

With evaluate.lr_choice "task" (BERT's protocol: the best fine-tuning rate per task on the dev set)
each task then takes the point best on its own validation score, averaged over the same seeds (ties:
the encoder's point): a multi-task run trains every task at one encoder rate, so a task's scores
come from the encoder's runs at its point, and the other seeds are fitted at every point some task
chose. The encoder's one point (best mean over tasks) still sets the modes' full fine-tuning row.

`mode_fits` fits the rows comparing ways to adapt our encoder (bertops.evaluate.modes) with each
row's own rate: full fine-tuning at the pretrained encoder's chosen rate (its row is the grid's
kept run when that run is full fine-tuning with heads on the last layer, not fitted again),
adapters at the best rate of evaluate.adapters_lr_grid on validation, and frozen features at the
best head rate of evaluate.frozen_lr_grid (a linear head on fixed features wants a higher rate than
heads trained along with their encoder: at 75 steps a code-entities head at 2e-3 learnt only the
`O` prior, F1 0, against 0.066 at 3e-2).

Fits go through a `bertops.stages.fit_pool.FitPool` (`evaluate.jobs` at a time).

`Prefit` is a fine-tuning the pipeline already made (the finetune stage's model): the grid's run at
its seed and rate is that model, hard-linked into the grid's folder rather than fitted again (with
evaluate.seeds[0] equal to the top-level seed and finetune.learning_rate in the grid, one fit of
~1 min on 2 CPU cores saved; the same code, data, seed and budget would give the same model).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from bertops.config import Params
from bertops.evaluate import baselines, rates, report
from bertops.stages.fit_pool import FitPool, fit_multitask_here

log = logging.getLogger(__name__)


@dataclass
class Choice:
    """One encoder's learning rate and fine-tuning dropout: the grid's validation scores and the kept
    first-seed run."""

    chosen: float  # the encoder learning rate
    dropout: float | None = None  # its fine-tuning encoder dropout (finetune.encoder_dropout; None: config's)
    dropout_chosen: bool = False  # the dropout came from a grid of 2+ values
    grid: list[dict] = field(default_factory=list)  # [{"lr", ["encoder_dropout"], "validation_score", ...}]
    # {task: (lr, dropout)}: the point each task's scores come from (evaluate.lr_choice "task": its own
    # best on validation; "encoder", or no grid: (chosen, dropout) for all); set by choose_lrs
    task_points: dict[str, tuple] = field(default_factory=dict)
    per_task: bool = False  # task_points were chosen per task (the summary lists them)
    # every grid seed's (evaluate.lr_seeds) models, each task's at its point, and their
    # read_metrics_csv series (each task's columns from its point's run); empty without a grid
    seed_model_dirs: dict[int, dict[str, Path]] = field(default_factory=dict)
    seed_curves: dict[int, dict] = field(default_factory=dict)
    chosen_model_dirs: dict[str, Path] | None = None  # the encoder's point's first-seed run (None: no grid)
    seconds: list[float] = field(default_factory=list)
    result: dict | None = None  # the encoder's point's first-seed fit_multitask result
    prefit_lr: float | None = None  # the grid's rate whose run was a Prefit (not fitted here)
    prefit_kept: bool = False  # every task's first-seed run is that one

    def points(self) -> list[tuple]:
        """The distinct points the tasks read, in task order."""
        return list(dict.fromkeys(self.task_points.values()))

    def summary(self) -> dict:
        out = {"chosen": self.chosen, "grid": self.grid}
        out = {**out, "encoder_dropout": self.dropout} if self.dropout_chosen else out
        if not self.per_task:
            return out
        return {**out, "tasks": {t: {"lr": lr, **({"encoder_dropout": d} if self.dropout_chosen else {})}
                                 for t, (lr, d) in self.task_points.items()}}


@dataclass
class Prefit:
    """A finished fine-tuning (out_dir holds model/, metrics.json and logs/ as the finetune stage
    writes them) that stands for the fit of one encoder at `seed` and rate `lr`."""

    seed: int
    lr: float
    dropout: float | None  # its finetune.encoder_dropout
    out_dir: Path
    result: dict  # its metrics.json: gate, score, costs, model_dirs, ...

    def link_into(self, run_dir: Path) -> tuple[dict[str, Path], dict]:
        """Hard-link out_dir's files into run_dir (a copy where links fail) so that the grid may
        delete its runs without touching the pipeline's model: ({task: model dir}, result)."""
        shutil.copytree(self.out_dir, run_dir, copy_function=_link_or_copy)
        root = self.out_dir.resolve()
        dirs = {t: run_dir / Path(d).resolve().relative_to(root) for t, d in self.result["model_dirs"].items()}
        return dirs, {**self.result, "model_dirs": {t: str(d) for t, d in dirs.items()}}


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def finetune_budget(params: Params):
    """The `finetune:` section every compared encoder is fine-tuned with: unchanged, or capped at
    evaluate.max_steps (then spread over max_epochs shorter epochs: validation, which picks the
    kept epoch, runs at epoch ends)."""
    ep, ft = params.evaluate, params.finetune
    if ep.max_steps is None:
        return ft
    per_epoch = math.ceil(ep.max_steps / max(1, ft.max_epochs))
    return ft.model_copy(update={"max_steps": ep.max_steps,
                                 "steps_per_epoch": min(per_epoch, ft.steps_per_epoch or per_epoch)})


def encoders(params: Params, notes: list[str]) -> dict[str, tuple[str, bool]]:
    """{name: (init dir, random_init)} of the encoders compared (a note when minilm is missing)."""
    ep = params.evaluate
    out = {"pretrained": (ep.pretrain_dir, False)}
    if "random_init" in ep.baselines:
        out["random_init"] = (ep.pretrain_dir, True)
    if "minilm" in ep.baselines:
        mdir = baselines.minilm_dir()
        if mdir is None:
            notes.append(f"- minilm: skipped, package `{baselines.MINILM_PACKAGE}` is not installed.")
        else:
            out["minilm"] = (str(mdir), False)
    return out


def lr_grid(params: Params, ft) -> list[float]:
    """The rates tried: evaluate.lr_grid, or the one finetune learning rate."""
    return list(dict.fromkeys(params.evaluate.lr_grid)) or [ft.learning_rate]


def dropout_grid(params: Params, ft) -> list[float | None]:
    """The fine-tuning encoder dropouts tried: evaluate.encoder_dropout_grid, or finetune's one."""
    return list(dict.fromkeys(params.evaluate.encoder_dropout_grid)) or [ft.encoder_dropout]


def fit(params: Params, ft, init_dir: str, run_dir: Path, seed: int, random_init: bool,
        tasks: list[str], lr: float, dropout: float | None,
        pool: FitPool | None = None) -> tuple[dict[str, Path], dict]:
    """Fine-tune one encoder at one seed, encoder rate and encoder dropout: ({task: model dir},
    fit_multitask's result)."""
    fit_multitask = pool.fit_multitask if pool is not None else fit_multitask_here
    ft_params = params.model_copy(update={"finetune": ft.model_copy(
        update={"learning_rate": lr, "encoder_dropout": dropout})})
    # loggers=None: a CSV log in run_dir only; baseline runs stay out of the stage's MLflow run
    result = fit_multitask(ft_params, init_dir, run_dir, seed, random_init=random_init, tasks=tasks,
                           loggers=None)
    dirs = result.get("model_dirs") or {t: result.get("model_dir") or run_dir / "model" for t in tasks}
    return {t: Path(d) for t, d in dirs.items()}, result


def read_curves(run_dir: Path) -> dict:
    """The Lightning CSV logs (metrics.csv, one per model) of a run, merged."""
    curves: dict = {}
    for csv_path in sorted(run_dir.glob("**/metrics.csv")):
        curves.update(report.read_metrics_csv(csv_path))
    return curves


def compose_curves(point_curves: dict[tuple, dict], task_points: dict[str, tuple]) -> dict:
    """One seed's curves when tasks read different points' runs: each task's columns from its point's
    run, the shared ones (e.g. the summed train loss) from the first task's."""
    points = list(dict.fromkeys(task_points.values()))
    if len(points) == 1:
        return point_curves[points[0]]
    base = point_curves[points[0]]
    out = {c: v for c, v in base.items() if not any(report.task_columns([c], t) for t in task_points)}
    for t, p in task_points.items():
        out.update({c: point_curves[p][c] for c in report.task_columns(list(point_curves[p]), t)})
    return out


def point_folder(point: tuple, vary_dropout: bool) -> str:
    """A grid point's run folder name: lr<rate>[-dropout<d>]."""
    lr, d = point
    return f"lr{lr:g}" + (f"-dropout{report.dropout_str(d)}" if vary_dropout else "")


def task_scores(result: dict) -> dict[str, float]:
    """{task: validation (gate) score} of one fit_multitask result."""
    tasks = (result.get("gate") or {}).get("tasks")
    if not tasks:
        raise ValueError("fit_multitask returned no per-task gate (validation) scores")
    return {t: float(m["score"]) for t, m in tasks.items()}


def choose_lrs(params: Params, ft, encs: dict[str, tuple[str, bool]], work: Path,
               tasks: list[str], prefit: dict[str, Prefit] | None = None,
               pool: FitPool | None = None) -> dict[str, Choice]:
    """Each encoder's rate and dropout: with a grid of 2+ points (evaluate.lr_grid x
    evaluate.encoder_dropout_grid, the dropout varying slowest), fine-tune at each (the first
    evaluate.lr_seeds seeds) and keep the one with the best mean validation (gate) score, ties to the
    first in the grid; else the one point. prefit: {encoder: a run that stands for its fit at the first
    seed, that rate and dropout} (not fitted again). pool: fits through it, each encoder's grid a chain
    of its own. With evaluate.lr_choice "task", each task also gets its own point (module docstring)."""
    grid, dropouts = lr_grid(params, ft), dropout_grid(params, ft)
    points = [(lr, d) for d in dropouts for lr in grid]
    if len(points) == 1:
        return {name: Choice(chosen=grid[0], dropout=dropouts[0], task_points={t: points[0] for t in tasks})
                for name in encs}
    grid_seeds = list(params.evaluate.seeds[:params.evaluate.lr_seeds])
    seed = grid_seeds[0]
    vary_dropout = len(dropouts) > 1
    per_task = params.evaluate.lr_choice == "task"

    def describe(point: tuple) -> dict:
        return {"lr": point[0], "encoder_dropout": point[1]} if vary_dropout else {"lr": point[0]}

    def label(point: tuple) -> str:
        lr, d = point
        return f"lr {lr:g}" + (f", dropout {report.dropout_str(d)}" if vary_dropout else "")

    def mean_score(result: dict) -> float:
        return sum(result["seed_scores"]) / len(result["seed_scores"])

    def choose_one(name: str, init_dir: str, random_init: bool) -> Choice:
        seconds: list[float] = []
        pre = (prefit or {}).get(name)
        pre_point = (pre.lr, pre.dropout) if pre is not None and pre.seed == seed else None
        prefit_point = pre_point if pre_point in points else None
        runs: dict[tuple, dict[int, dict[str, Path]]] = {}  # point -> seed -> model dirs

        def fit_seed(point: tuple, s: int, run_dir: Path) -> tuple[dict[str, Path], dict]:
            lr, d = point
            if point == prefit_point and s == seed:
                log.info("evaluate: %s seed %s at %s is the pipeline's model (%s; not fitted again)",
                         name, s, label(point), pre.out_dir)
                return pre.link_into(run_dir)
            log.info("evaluate: fine-tuning %s seed %s at %s (rate selection)", name, s, label(point))
            t0 = time.perf_counter()
            out = fit(params, ft, init_dir, run_dir, s, random_init, tasks, lr, d, pool)
            seconds.append(time.perf_counter() - t0)
            return out

        def fit_at(point: tuple):
            point_dir = work / name / point_folder(point, vary_dropout)
            results = {}
            for s in grid_seeds:
                runs.setdefault(point, {})[s], results[s] = fit_seed(point, s, point_dir / f"seed{s}")
            first = results[seed]
            # the first seed's result stands for the point (the modes' full fine-tuning row may reuse
            # it), with every grid seed's scores beside it
            return runs[point][seed], {**first, "seed_scores": [rates.validation_score(r) for r in results.values()],
                                       "seed_selection_scores": [r.get("score") for r in results.values()],
                                       "seed_task_scores": [task_scores(r) for r in results.values()] if per_task
                                       else []}, point_dir

        sel = rates.choose(points, fit_at, describe, score=mean_score, prune=False)
        log.info("evaluate: %s: %s chosen on validation (%s; mean over seeds %s)", name, label(sel.point),
                 ", ".join(f"{label(p)}: {g['validation_score']:.3f}" for p, g in zip(points, sel.grid)), grid_seeds)
        lr, d = sel.point
        # {point: {task: mean validation score over the grid seeds}}
        task_means = {p: {t: sum(s[t] for s in r["seed_task_scores"]) / len(grid_seeds) for t in tasks}
                      for p, r in zip(points, sel.results)} if per_task else {}
        if per_task:  # each task's best point; ties: the encoder's point, then the first in the grid
            task_points = {t: points[max(range(len(points)), key=lambda i: (task_means[points[i]][t],
                                                                           points[i] == sel.point, -i))]
                           for t in tasks}
            log.info("evaluate: %s: per task on validation: %s", name,
                     ", ".join(f"{t} {label(p)}" for t, p in task_points.items()))
        else:
            task_points = {t: sel.point for t in tasks}
        keep = {sel.point, *task_points.values()}
        for p, run_dir in zip(points, sel.run_dirs):
            if p not in keep:
                shutil.rmtree(run_dir, ignore_errors=True)
        result = {k: v for k, v in sel.result.items()
                  if k not in ("seed_scores", "seed_selection_scores", "seed_task_scores")}

        def entry(p: tuple, g: dict, r: dict) -> dict:
            sel_scores = [x for x in r["seed_selection_scores"] if x is not None]
            out = {**g, "selection_score": sum(sel_scores) / len(sel_scores) if sel_scores else None}
            out = {**out, "task_scores": task_means[p]} if per_task else out
            return {**out, "seeds": grid_seeds, "validation_scores": r["seed_scores"]} if len(grid_seeds) > 1 else out

        kept = {p: sel.run_dirs[points.index(p)] for p in keep}
        return Choice(chosen=lr, dropout=d, dropout_chosen=vary_dropout, seconds=seconds, task_points=task_points,
                      per_task=per_task,
                      seed_model_dirs={s: {t: runs[task_points[t]][s][t] for t in tasks} for s in grid_seeds},
                      seed_curves={s: compose_curves({p: read_curves(kept[p] / f"seed{s}") for p in kept},
                                                     task_points) for s in grid_seeds},
                      chosen_model_dirs=runs[sel.point][seed],
                      prefit_lr=prefit_point[0] if prefit_point else None,
                      prefit_kept=prefit_point is not None and set(task_points.values()) == {prefit_point},
                      result={**result, "lr": lr, "lr_selection": sel.lr_selection()},
                      grid=[entry(p, g, r) for p, g, r in zip(points, sel.grid, sel.results)])

    chains = [lambda name=name, enc=enc: choose_one(name, *enc) for name, enc in encs.items()]
    return dict(zip(encs, (pool or FitPool(1)).concurrently(chains)))


def seed_source(params: Params, name: str, seed: int, choice: Choice, reuse_pipeline: bool) -> str:
    """Where an encoder's run at `seed` comes from: "grid" (a kept rate-grid run: the first
    evaluate.lr_seeds seeds), "pipeline" (the finetune stage's model: same encoder, seed, rate and
    dropout) or "fit"."""
    if seed in choice.seed_model_dirs:
        return "grid"
    pf = params.finetune
    if (name == "pretrained" and reuse_pipeline and seed == params.seed
            and choice.points() == [(pf.learning_rate, pf.encoder_dropout)]):
        return "pipeline"
    return "fit"


def seed_fits(params: Params, ft, encoders: dict[str, tuple[str, bool]], choices: dict[str, Choice],
              reuse_pipeline: bool, tasks: list[str], work: Path, pool: FitPool) -> dict[tuple, tuple]:
    """{(encoder, seed): ({task: model dir}, curves, [seconds per fit])} of the seeds that need a fit: not a grid
    seed's run, nor the pipeline's model (its seed, rate and dropout). One fit per point the encoder's
    tasks read (Choice.points), each a chain of the pool; each task's model from its point's fit."""
    todo = [(name, seed, point) for name in encoders for seed in params.evaluate.seeds
            if seed_source(params, name, seed, choices[name], reuse_pipeline) == "fit"
            for point in choices[name].points()]
    vary_dropout = len(dropout_grid(params, ft)) > 1

    def fit_one(name: str, seed: int, point: tuple) -> tuple:
        init_dir, random_init = encoders[name]
        lr, d = point
        log.info("evaluate: fine-tuning %s seed %s at lr %g%s", name, seed, lr,
                 f", dropout {report.dropout_str(d)}" if vary_dropout else "")
        t0 = time.perf_counter()
        run_dir = work / name / point_folder(point, vary_dropout) / f"seed{seed}"
        model_dirs, _ = fit(params, ft, init_dir, run_dir, seed, random_init, tasks, lr, d, pool)
        return model_dirs, read_curves(run_dir), time.perf_counter() - t0

    done = dict(zip(todo, pool.concurrently([lambda k=k: fit_one(*k) for k in todo])))
    out = {}
    for name, seed in dict.fromkeys((name, seed) for name, seed, _ in todo):
        task_points = choices[name].task_points
        fitted = {p: done[(name, seed, p)] for p in choices[name].points()}
        out[(name, seed)] = ({t: fitted[task_points[t]][0][t] for t in tasks},
                             compose_curves({p: f[1] for p, f in fitted.items()}, task_points),
                             [f[2] for f in fitted.values()])
    return out


def full_row_run(ft, choice: Choice) -> tuple[dict[str, Path], dict] | None:
    """The pretrained encoder's kept grid run when it is what the modes' "finetune" row would fit
    (same encoder, first seed, chosen rate and dropout, budget `ft`): full fine-tuning with heads on the last
    layer. None without a grid or in another finetune mode / feature_layers."""
    if (choice.chosen_model_dirs is None or choice.result is None or ft.mode != "finetune"
            or ft.feature_layers != "last"):
        return None
    return choice.chosen_model_dirs, choice.result


def mode_fits(params: Params, ft, choices: dict[str, Choice] | None, work: Path, tasks: list[str],
              names: list[str], pool: FitPool | None = None) -> list[tuple]:
    """bertops.evaluate.modes.fit_all for `names` (of evaluate.modes) at the first seed (see the
    module docstring); only the "finetune" row needs `choices` (it trains at the pretrained encoder's
    chosen rate and dropout, after the other rows)."""
    from bertops.evaluate import modes

    ep = params.evaluate
    fit = pool.fit_multitask if pool is not None else None
    others = [n for n in names if n != "finetune"]
    grids = {"adapters": list(ep.adapters_lr_grid),
             **{name: list(ep.frozen_lr_grid) for name in others if name.startswith("feature_extraction")}}
    out = modes.fit_all(params, ft, others, ep.pretrain_dir, work, ep.seeds[0], tasks, grids=grids, fit=fit)
    if "finetune" in names:
        pretrained = choices["pretrained"]
        ft_full = ft.model_copy(update={"encoder_dropout": pretrained.dropout})
        reuse = {}
        if (run := full_row_run(ft_full, pretrained)) is not None:
            reuse["finetune"] = run
            log.info("evaluate: the full fine-tuning row is the lr grid's kept run (not fitted again)")
        out += modes.fit_all(params, ft_full, ["finetune"], ep.pretrain_dir, work, ep.seeds[0], tasks,
                             lrs={"finetune": pretrained.chosen}, reuse=reuse, fit=fit)
    return sorted(out, key=lambda f: names.index(f[0]))


def grids_and_modes(params: Params, ft, encs: dict[str, tuple[str, bool]], work: Path, tasks: list[str],
                    prefit: dict[str, Prefit] | None, pool: FitPool) -> tuple[dict[str, Choice], list[tuple]]:
    """choose_lrs and mode_fits: the modes rows that do not wait for the encoder's rate (all but
    "finetune") are fitted alongside the rate grids; the results as those two functions give them."""
    names = list(params.evaluate.modes)
    early = [n for n in names if n != "finetune"]
    choices, fitted = pool.concurrently([
        lambda: choose_lrs(params, ft, encs, work / "fits", tasks, prefit=prefit, pool=pool),
        lambda: mode_fits(params, ft, None, work / "modes", tasks, names=early, pool=pool)])
    if "finetune" in names:
        fitted += mode_fits(params, ft, choices, work / "modes", tasks, names=["finetune"], pool=pool)
    return choices, sorted(fitted, key=lambda f: names.index(f[0]))
