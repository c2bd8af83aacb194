"""bertops.stages.fit_pool.FitPool: fits in worker processes with the threads split, chains side by side."""

from __future__ import annotations

import multiprocessing
import os

import torch

from bertops.stages.fit_pool import FitPool


def test_without_workers_calls_run_here_in_order():
    with FitPool(1) as pool:
        assert pool.call(os.getpid) == os.getpid()
        order = []
        assert pool.concurrently([lambda: order.append(1) or "a", lambda: order.append(2) or "b"]) == ["a", "b"]
        assert order == [1, 2]


def test_workers_split_the_threads_and_chains_run_side_by_side():
    total = torch.get_num_threads()
    jobs = 2 if total >= 2 else 1
    with FitPool(2) as pool:
        assert pool.jobs == jobs  # never more workers than threads
        if jobs == 1:
            return
        assert pool.call(os.getpid) != os.getpid()
        assert pool.call(torch.get_num_threads) == total // 2
        # each chain waits at a 2-party barrier inside a worker: it passes only if both run at once
        with multiprocessing.Manager() as manager:
            barrier = manager.Barrier(2)
            assert pool.concurrently([lambda: pool.call(barrier.wait, 60)] * 2) in ([0, 1], [1, 0])
