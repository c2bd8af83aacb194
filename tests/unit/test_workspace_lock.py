"""One pipeline run per workspace (flows/workspace.py): a second run refuses, naming the first, or waits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.workspace import WorkspaceBusy, workspace_lock

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from flows.workspace import workspace_lock
with workspace_lock({root!r}, {{"flow_run": "first-run-id", "name": "first-run"}}):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def _hold(root: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=str(REPO), root=str(root)), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_refuses_and_names_the_first(tmp_path):
    holder = _hold(tmp_path, 30)
    try:
        with pytest.raises(WorkspaceBusy) as e, workspace_lock(tmp_path, {"flow_run": "second"}, wait_seconds=0):
            pass
        assert "first-run-id" in str(e.value) and str(holder.pid) in str(e.value)
        assert "BERTOPS_WORKSPACE_WAIT_SECONDS" in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed outright: the kernel dropped its lock, nothing to clean up
    with workspace_lock(tmp_path, {"flow_run": "third"}, wait_seconds=0):
        pass


def test_a_second_run_waits_for_the_first_when_told_to(tmp_path):
    holder = _hold(tmp_path, 1.5)
    t0 = time.monotonic()
    with workspace_lock(tmp_path, {"flow_run": "second"}, wait_seconds=60, poll_seconds=0.1):
        # it waited for the first run to let go (the holder sleeps 1.5 s after taking the lock; its
        # process may still be exiting here, so its exit status proves nothing)
        assert time.monotonic() - t0 >= 1.0
    assert time.monotonic() - t0 < 30
    holder.wait()
