"""Pretraining on a wall-clock budget: `pretrain.max_time`, and the learning-rate schedule tied to it.

With `max_time` (seconds), training stops at whichever comes first, the deadline or `max_steps`,
and the learning rate follows the budget (Izsak et al. 2021; Cramming):

    lr(step, t) = peak x min(step / warmup_steps, 1, (1 - progress) / decay_fraction),
    progress    = max(step / max_steps, t / max_time)

i.e. a linear warm-up over `warmup_steps`, then a linear decay that reaches zero at the deadline
(or at max_steps, if that comes first). With decay_fraction 1 the decay starts after the warm-up;
below 1 the peak holds until the last decay_fraction of the budget (warm-up-stable-decay, Hägele
et al. 2024): more of a short budget at the peak rate. t is the training time elapsed: every second since the
first training step of the run, in-training validation and checkpoint writes included, the final
held-out evaluation not; it is saved in every checkpoint, so a resumed run continues the same
schedule and the same deadline instead of restarting them (`TrainingClock`).

Without `max_time` the schedule is the step schedule the pipeline always had (transformers'
`get_linear_schedule_with_warmup`), bit for bit.

A time budget makes the result depend on the machine's speed and load: how many steps fit in
max_time differs between machines and runs, so the bytes of the model differ. Runs that must be
bit-identical (the end-to-end tests, `dvc repro` checks of reproducibility) use max_steps alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def budget_progress(step: int, elapsed: float, max_steps: int, max_time: float | None) -> float:
    """How much of the budget is spent, 0..1: steps or training time, whichever is further along."""
    progress = step / max_steps
    if max_time is not None:
        progress = max(progress, elapsed / max_time)
    return progress


def budget_lr_factor(step: int, elapsed: float, warmup_steps: int, max_steps: int,
                     max_time: float | None, decay_fraction: float = 1.0) -> float:
    """The multiplier of the peak learning rate at `step` after `elapsed` training seconds."""
    progress = budget_progress(step, elapsed, max_steps, max_time)
    warm = step / warmup_steps if warmup_steps > 0 else 1.0
    return max(0.0, min(warm, 1.0, (1.0 - progress) / decay_fraction))


def _now() -> float:
    """The clock a TrainingClock reads by default (looked up when the clock is made: tests put a
    fake one here to run a time budget without sleeping)."""
    return time.monotonic()


class TrainingClock:
    """Training seconds elapsed, carried across resumes: `offset` (restored from the checkpoint)
    plus the time since `start()` in this process. `clock` is injectable (tests use a fake one)."""

    def __init__(self, clock: Callable[[], float] | None = None):
        self.clock = clock or _now
        self.offset = 0.0
        self._started: float | None = None

    def start(self) -> None:
        if self._started is None:
            self._started = self.clock()

    def stop(self) -> None:
        """Freeze the count (training ended: evaluation and saving afterwards are not training time)."""
        self.offset, self._started = self.elapsed(), None

    def elapsed(self) -> float:
        return self.offset + (self.clock() - self._started if self._started is not None else 0.0)

    def restore(self, elapsed: float) -> None:
        """Continue from `elapsed` seconds (a resumed run); the clock restarts at the next start()."""
        self.offset, self._started = float(elapsed), None


class BudgetSchedule(LRScheduler):
    """`budget_lr_factor` as a per-step LR scheduler. Its state (saved by Lightning) holds the
    step; the elapsed time comes from the TrainingClock, whose state the module saves."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, max_steps: int, max_time: float | None,
                 clock: TrainingClock, decay_fraction: float = 1.0):
        self.warmup_steps, self.max_steps, self.max_time = warmup_steps, max_steps, max_time
        self.decay_fraction = decay_fraction
        self.training_clock = clock
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        f = budget_lr_factor(self.last_epoch, self.training_clock.elapsed(), self.warmup_steps,
                             self.max_steps, self.max_time, self.decay_fraction)
        return [base * f for base in self.base_lrs]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "training_clock")}


def over_budget(clock: TrainingClock, max_time: float | None) -> bool:
    return max_time is not None and clock.elapsed() >= max_time
