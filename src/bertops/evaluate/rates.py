"""Choosing a learning rate on validation, the one rule every rate grid of the evaluate stage uses
(each encoder's rate and fine-tuning dropout, bertops.stages.evaluate_fits.choose_lrs; each way of
adapting it, bertops.evaluate.modes.choose_rate): fit at each grid point, keep the run with the best
validation gate score (the fit result's ["gate"]["score"], or what `score` reads from it; ties:
the first point in the grid), delete the other runs' folders (unless prune=False: the caller keeps
more than the best, as the per-task rate choice does).

    choose(points, fit, describe=None, score=validation_score, prune=True) -> Selection
    validation_score(fit result) -> float
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# fit(point) -> ({task: model dir}, fit result, the run's folder: deleted unless its point is kept);
# a point is a rate, or any hashable setting (the evaluate stage's (rate, encoder dropout) pairs)
Fit = Callable[[Any], tuple[dict[str, Path], dict, Path]]


@dataclass
class Selection:
    point: Hashable  # the kept grid point (a rate)
    model_dirs: dict[str, Path]  # its run's models
    result: dict  # its run's fit result
    run_dir: Path  # its run's folder (kept)
    grid: list[dict]  # [{"lr", ..., "validation_score"}] in grid order: the scores the point was chosen by
    results: list[dict]  # every point's fit result, in grid order
    run_dirs: list[Path]  # every point's run folder, in grid order (only run_dir's left with prune)

    def lr_selection(self) -> list[dict]:
        """[{"lr", ..., "validation_score"}] in grid order (a fit result's "lr_selection")."""
        return [dict(g) for g in self.grid]


def validation_score(result: dict) -> float:
    """The score a rate is chosen by: the mean task score on the validation gate examples (scored
    once on the kept epoch; the selection examples, which chose that epoch, are its max over epochs)."""
    gate = result.get("gate") or {}
    if "score" not in gate:
        raise ValueError("fit_multitask returned no gate (validation) score")
    return float(gate["score"])


def choose(points: Iterable[Hashable], fit: Fit, describe: Callable[[Any], dict] | None = None,
           score: Callable[[dict], float] = validation_score, prune: bool = True) -> Selection:
    """Fit at every point (in order), keep the best score(fit result) (validation), ties to the first;
    the other runs' folders are deleted once every point is fitted. describe(point): its grid entry's
    keys (default {"lr": point})."""
    describe = describe or (lambda lr: {"lr": lr})
    runs = []
    for point in points:
        dirs, result, run_dir = fit(point)
        runs.append((point, dirs, result, Path(run_dir), score(result)))
    if not runs:
        raise ValueError("no learning rate to choose from")
    best = max(range(len(runs)), key=lambda i: (runs[i][4], -i))
    for i, run in enumerate(runs):
        if prune and i != best:
            shutil.rmtree(run[3], ignore_errors=True)
    point, dirs, result, run_dir, _ = runs[best]
    return Selection(point=point, model_dirs=dirs, result=result, run_dir=run_dir,
                     grid=[{**describe(r[0]), "validation_score": r[4]} for r in runs], results=[r[2] for r in runs],
                     run_dirs=[r[3] for r in runs])
