"""The scale-out stack (bertops.stack) for tests: started from nothing, stopped at the end.

Test modules under tests/integration get a running one from the `stack` fixture of
tests/integration/conftest.py (one stack shared by the modules that use it):

    def test_x(stack):
        stack.env          # the client environment stack.env holds (MLFLOW_TRACKING_URI, ...)
        stack.client_env() # os.environ + stack.env + offline settings, for subprocesses
        stack.stack        # the bertops.stack.Stack (pids(), objectstore.client(), ...)

Every port is a free loopback port and the state directory a fresh folder under /tmp (not pytest's
tmp_path: under root PostgreSQL runs as `postgres`, which cannot enter /tmp/pytest-of-root).
Skips when PostgreSQL or SeaweedFS is missing, unless CI is set (then it fails).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from bertops.env import OFFLINE_ENV


@dataclass
class RunningStack:
    stack: object  # bertops.stack.Stack
    env: dict[str, str]
    state_dir: Path
    startup_seconds: dict[str, float]

    def client_env(self, **extra: str) -> dict[str, str]:
        """The environment a client process gets: ours, the offline settings, stack.env, `extra`."""
        return {**os.environ, **OFFLINE_ENV, **self.env, **extra}


def _missing() -> str | None:
    try:
        from bertops.stack.objectstore import weed_binary
        from bertops.stack.postgres import PG_BIN

        weed_binary()
    except Exception as exc:  # noqa: BLE001
        return str(exc)
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL not installed ({PG_BIN}/initdb; make system-deps installs it)"
    return None


def start_stack(prefix: str = "bertops-stack-", **config) -> RunningStack:
    """A stack on free ports in a fresh state directory; `config`: more StackConfig fields (bind, advertise)."""
    from bertops.stack import Stack, StackConfig, free_ports, load_env

    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    state_dir = Path(tempfile.mkdtemp(prefix=prefix))
    state_dir.chmod(0o711)  # under root, PostgreSQL runs as `postgres` and must pass through
    stack = Stack(state_dir / "stack", StackConfig(ports=free_ports(), mlflow_workers=2, timeout=180, **config))
    try:
        timings = stack.up(log=lambda msg: print(f"[stack] {msg}"))
    except BaseException:
        stack.down(purge=True, log=lambda msg: None)
        shutil.rmtree(state_dir, ignore_errors=True)
        raise
    return RunningStack(stack, load_env(stack.state_dir), stack.state_dir, timings)


def stop_stack(running: RunningStack) -> None:
    running.stack.down(purge=True, log=lambda msg: print(f"[stack] {msg}"))
    shutil.rmtree(running.state_dir.parent, ignore_errors=True)
