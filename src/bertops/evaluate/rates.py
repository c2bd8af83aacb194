"""Choosing a learning rate on validation, the one rule every rate grid of the evaluate stage uses
(each encoder's rate, bertops.stages.evaluate_fits.choose_lrs; each way of adapting it,
bertops.evaluate.modes.choose_rate): fit at each rate, keep the run with the best validation gate
score (the fit result's ["gate"]["score"]; ties: the first rate in the grid), delete the other
runs' folders.

    choose(rates, fit) -> Selection
    validation_score(fit result) -> float
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# fit(lr) -> ({task: model dir}, fit result, the run's folder: deleted unless its rate is kept)
Fit = Callable[[float], tuple[dict[str, Path], dict, Path]]


@dataclass
class Selection:
    lr: float  # the kept rate
    model_dirs: dict[str, Path]  # its run's models
    result: dict  # its run's fit result
    run_dir: Path  # its run's folder (kept)
    grid: list[dict]  # [{"lr", "validation_score"}] in grid order: the scores the rate was chosen by
    results: list[dict]  # every rate's fit result, in grid order

    def lr_selection(self) -> list[dict]:
        """[{"lr", "validation_score"}] in grid order (a fit result's "lr_selection")."""
        return [dict(g) for g in self.grid]


def validation_score(result: dict) -> float:
    """The score a rate is chosen by: the mean task score on the validation gate examples (scored
    once on the kept epoch; the selection examples, which chose that epoch, are its max over epochs)."""
    gate = result.get("gate") or {}
    if "score" not in gate:
        raise ValueError("fit_multitask returned no gate (validation) score")
    return float(gate["score"])


def choose(rates: Iterable[float], fit: Fit) -> Selection:
    """Fit at every rate (in order), keep the best validation score, ties to the first; the other
    runs' folders are deleted once every rate is fitted."""
    runs = []
    for lr in rates:
        dirs, result, run_dir = fit(lr)
        runs.append((lr, dirs, result, Path(run_dir), validation_score(result)))
    if not runs:
        raise ValueError("no learning rate to choose from")
    best = max(range(len(runs)), key=lambda i: (runs[i][4], -i))
    for i, run in enumerate(runs):
        if i != best:
            shutil.rmtree(run[3], ignore_errors=True)
    lr, dirs, result, run_dir, _ = runs[best]
    return Selection(lr=lr, model_dirs=dirs, result=result, run_dir=run_dir,
                     grid=[{"lr": r[0], "validation_score": r[4]} for r in runs], results=[r[2] for r in runs])
