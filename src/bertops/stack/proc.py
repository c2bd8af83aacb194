"""Start, find and stop the stack's server processes, each in its own session (process group).

A service's pid file holds `host:pid:start-time` (bertops.lifeline.identity), so a stale file
never names a recycled pid. Standard library only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bertops.lifeline import identity, is_alive, parse_identity


class StackError(RuntimeError):
    """A service did not start or stop; the message names it and its log file."""


def spawn(cmd: Sequence[str], log_file: Path, env: Mapping[str, str], cwd: Path | None = None,
          user: str | None = None) -> subprocess.Popen:
    """Start `cmd` detached (own session, stdin closed), stdout and stderr appended to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env), cwd=cwd, start_new_session=True, user=user)


def write_pid(pid_file: Path, pid: int) -> None:
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(identity(pid) + "\n")


def running_pid(pid_file: Path) -> int | None:
    """The pid named by `pid_file` when that very process still runs, else None."""
    if not pid_file.exists():
        return None
    ident = pid_file.read_text().strip()
    if not ident:
        return None
    try:
        _, pid, _ = parse_identity(ident)
    except ValueError:
        return None
    return pid if is_alive(ident) else None


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pid: int, grace_seconds: float = 10.0) -> bool:
    """SIGTERM the process group led by `pid`, SIGKILL it after `grace_seconds`; True if it was killed."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        _reap(pid)
        if not group_alive(pid):
            return False
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while group_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status when `pid` is our own child (a zombie would look alive)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def log_tail(log_file: Path, lines: int = 15) -> str:
    if not log_file.exists():
        return "(no log written)"
    text = log_file.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_until(service: str, check: Callable[[], bool], timeout: float, log_file: Path,
               proc: subprocess.Popen | None = None) -> float:
    """Poll `check` until it is true; seconds waited. Raises StackError naming the service and its log."""
    start = time.monotonic()
    last_error = ""
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{service} exited with status {proc.returncode} before it was healthy; "
                             f"log: {log_file}\n{log_tail(log_file)}")
        try:
            if check():
                return time.monotonic() - start
        except Exception as exc:  # noqa: BLE001 - any failure of a probe means "not ready yet"
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise StackError(f"{service} was not healthy after {timeout:.0f} s ({last_error or 'no answer'}); "
                     f"log: {log_file}\n{log_tail(log_file)}")


def http_status(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> int:
    """The HTTP status `url` answers with (an error status is returned, not raised)."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
