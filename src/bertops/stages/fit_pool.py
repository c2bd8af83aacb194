"""`FitPool` runs the evaluate stage's fine-tunings `evaluate.jobs` at a time in worker processes,
the CPU threads split among them: on 2 CPU cores two 1-thread fits do ~1.7x the work of one 2-thread fit (small
matmuls scale poorly over threads). Independent chains of fits (each encoder's rate grid, the modes'
grids, the seeds) then run side by side; with jobs 1 every fit runs in this process, in order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


def _worker_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # a spawned worker: torch is not imported yet
    import torch

    torch.set_num_threads(threads)


def fit_multitask_here(*args, **kwargs) -> dict:
    from bertops.train.finetune import fit_multitask

    return fit_multitask(*args, **kwargs)


class FitPool:
    """Fine-tunings (bertops.train.finetune.fit_multitask) in `jobs` spawned worker processes with the
    threads of this one (torch.get_num_threads()) split among them; jobs 1 (or 1 thread): in this
    process. `concurrently` runs independent chains of fits side by side (threads that wait on the
    workers), or one after another without workers. Use as a context manager."""

    def __init__(self, jobs: int):
        import torch

        total = torch.get_num_threads()
        self.jobs = max(1, min(jobs, total))
        self._pool = None
        if self.jobs > 1:
            # spawn, not fork: this process may hold threads (MLflow, torch) that fork would copy mid-state
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_threads, initargs=(total // self.jobs,))

    def __enter__(self) -> FitPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def call(self, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs) in a worker (fn and its arguments picklable), or here without workers."""
        if self._pool is None:
            return fn(*args, **kwargs)
        return self._pool.submit(fn, *args, **kwargs).result()

    def fit_multitask(self, *args, **kwargs) -> dict:
        return self.call(fit_multitask_here, *args, **kwargs)

    def concurrently(self, chains: Sequence[Callable[[], object]]) -> list:
        """[chain() for chain in chains], side by side when there are workers (each chain's fits go
        through this pool); the first error is raised once every chain has stopped."""
        if self._pool is None or len(chains) < 2:
            return [chain() for chain in chains]
        with ThreadPoolExecutor(len(chains)) as threads:
            futures = [threads.submit(chain) for chain in chains]
            return [f.result() for f in futures]
