"""A stage ends when the orchestrator that started it dies.

`bertops run` starts each stage as `dvc repro --single-item STAGE` in its own session, so that a
cancel can SIGTERM the whole group. When the orchestrator itself is killed (`kill -9`, the OOM
killer), nothing signals that group: the stage would train on as an orphan, holding DVC's lock,
and the next run would be refused. So the flow names itself in the stage's environment
(ORCHESTRATOR_ENV, `host:pid:start-time`), and `bertops stage` calls `watch_orchestrator()`: a
daemon thread waits for that process to end and then sends SIGTERM to its own process. Training
then stops at the end of the batch in progress, saves last.ckpt and exits with 143
(bertops.train.checkpointing); dvc sees the stage fail, releases its lock and exits.

The wait uses a pidfd (Linux >= 5.3), which names one process, not a number that a new process
could reuse; elsewhere it polls. The start time in the identity guards the moments in between.
Standard library only: it runs before anything heavy is imported.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

ORCHESTRATOR_ENV = "BERTOPS_ORCHESTRATOR"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (the state) onwards; None where there is no /proc or no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None where
    there is no /proc or no such process."""
    fields = _stat_fields(pid)
    return fields[22 - 3] if fields is not None else None


def identity(pid: int | None = None) -> str:
    """`host:pid:start-time` of a process (this one by default); the start time may be empty."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{process_start_time(pid) or ''}"


def parse_identity(ident: str) -> tuple[str, int, str | None]:
    host, pid, start = ident.rsplit(":", 2)
    return host, int(pid), start or None


def is_alive(ident: str) -> bool | None:
    """Whether the process named by identity() still runs; None when it cannot be told (another
    host, a malformed identity)."""
    try:
        host, pid, start = parse_identity(ident)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    fields = _stat_fields(pid)  # one read: the state, then the start time
    if fields is None:
        return True  # exists (kill said so), no /proc to tell more
    if fields[0].startswith(("Z", "X")):  # a zombie: ended, not yet reaped
        return False
    return start is None or fields[22 - 3] == start  # another start time: the PID was reused


def wait_for_exit(ident: str, poll_seconds: float = 1.0) -> None:
    """Block until the process named by `ident` has ended (at once if it is not alive now)."""
    _, pid, start = parse_identity(ident)
    fd = None
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:  # no pidfd support (old kernel, seccomp): poll
            fd = None
    try:
        # Checked after the pidfd is open: if this is still the same process, the pidfd is its own.
        if is_alive(ident) is False:
            return
        if fd is not None:
            select.select([fd], [], [])  # readable once the process has exited
            return
        while is_alive(ident) is not False:
            time.sleep(poll_seconds)
    finally:
        if fd is not None:
            os.close(fd)


def _stop_self(grace_seconds: float) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    # Lightning turns SIGTERM into a checkpoint at the end of the batch in progress; anything that
    # still runs after the grace period is stuck (or ignores SIGTERM) and would keep DVC's lock.
    time.sleep(grace_seconds)
    log.error("still running %.0f s after SIGTERM: exiting", grace_seconds)
    os._exit(128 + signal.SIGTERM)


def watch_orchestrator(environ: Mapping[str, str] = os.environ,
                       on_exit: Callable[[], None] | None = None,
                       grace_seconds: float = 600.0) -> threading.Thread | None:
    """When ORCHESTRATOR_ENV names a process, start a daemon thread that waits for it to end and
    then calls `on_exit` (default: SIGTERM to this process, a hard exit after `grace_seconds`).
    Returns the thread, or None when there is no orchestrator to watch (a plain `dvc repro`)."""
    ident = environ.get(ORCHESTRATOR_ENV)
    if not ident:
        return None
    if is_alive(ident) is None:
        log.warning("%s=%r: not a process of this host, not watched", ORCHESTRATOR_ENV, ident)
        return None
    action = on_exit or (lambda: _stop_self(grace_seconds))

    def watch() -> None:
        wait_for_exit(ident)
        log.warning("the orchestrator (%s) is gone: stopping this stage (SIGTERM)", ident)
        action()

    thread = threading.Thread(target=watch, name="bertops-lifeline", daemon=True)
    thread.start()
    return thread
