"""One pipeline run per workspace at a time.

A pipeline run writes its overrides into params.yaml and then runs `dvc repro` stage by stage: a
second run in the same folder would change the parameters under the first one's stages, and DVC's
own lock covers one command, not a run (and `dvc.lock` writes are last-writer-wins). So the flow
holds an exclusive lock on `.dvc/tmp/bertops-pipeline.lock` for the whole run. A second run waits up
to BERTOPS_WORKSPACE_WAIT_SECONDS (default 0) and then refuses, naming the run that holds it. The
kernel drops the lock when its process ends, however it ends (kill -9 included): nothing to clean up.
Runs in separate clones (or on workers, flows/worker.py) do not block each other.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WAIT_ENV = "BERTOPS_WORKSPACE_WAIT_SECONDS"


class WorkspaceBusy(RuntimeError):
    pass


@contextmanager
def workspace_lock(root: str | Path, owner: dict[str, str], wait_seconds: float | None = None,
                   poll_seconds: float = 1.0) -> Iterator[None]:
    """Hold the workspace's pipeline lock; `owner` (e.g. the Prefect flow run) is written into it."""
    if wait_seconds is None:
        wait_seconds = float(os.environ.get(WAIT_ENV) or 0)
    path = Path(root) / ".dvc" / "tmp" / "bertops-pipeline.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    with open(path, "a+") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    raise WorkspaceBusy(
                        f"another pipeline run is using {Path(root).resolve()}: {holder}. Wait for it to end "
                        f"(or set {WAIT_ENV} to wait), or run from another clone") from None
                time.sleep(poll_seconds)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            **owner}))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
