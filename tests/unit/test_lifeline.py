"""bertops.lifeline: a stage notices that its orchestrator died, with real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

from bertops import lifeline


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def test_identity_tells_a_live_process_from_a_dead_zombie_or_reused_pid():
    proc = _sleeper()
    try:
        ident = lifeline.identity(proc.pid)
        host, pid, start = lifeline.parse_identity(ident)
        assert (host, pid) == (socket.gethostname(), proc.pid) and start
        assert lifeline.is_alive(ident) is True
        assert lifeline.is_alive(f"{host}:{pid}:{int(start) + 1}") is False  # same PID, another process
        assert lifeline.is_alive(f"another-host.invalid:{pid}:{start}") is None  # cannot tell
        proc.kill()
        time.sleep(0.5)
        assert lifeline.is_alive(ident) is False  # killed, not yet reaped: a zombie (os.kill(pid, 0) succeeds)
    finally:
        proc.kill()
        proc.wait()
    assert lifeline.is_alive(ident) is False  # reaped


def test_the_watcher_fires_when_the_orchestrator_dies_and_not_before():
    orchestrator = _sleeper()
    fired = threading.Event()
    try:
        thread = lifeline.watch_orchestrator({lifeline.ORCHESTRATOR_ENV: lifeline.identity(orchestrator.pid)},
                                             on_exit=fired.set)
        assert thread is not None and thread.daemon
        assert not fired.wait(1.0)
        orchestrator.kill()  # SIGKILL, and not reaped: the watcher sees a zombie exit
        assert fired.wait(10.0)
    finally:
        orchestrator.kill()
        orchestrator.wait()
    assert lifeline.watch_orchestrator({}) is None  # a plain `dvc repro`: nothing to watch


def test_a_stage_whose_orchestrator_is_killed_gets_sigterm():
    """A child process stands for `bertops stage` (it calls watch_orchestrator as the CLI does,
    with a SIGTERM handler standing for Lightning's); SIGKILL of the orchestrator ends it."""
    orchestrator = _sleeper()
    script = textwrap.dedent("""
        import signal, sys, time
        from bertops.lifeline import watch_orchestrator
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
        watch_orchestrator()
        print("watching", flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, lifeline.ORCHESTRATOR_ENV: lifeline.identity(orchestrator.pid)}
    stage = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert stage.stdout.readline().strip() == "watching"
        time.sleep(0.5)
        assert stage.poll() is None
        os.kill(orchestrator.pid, signal.SIGKILL)
        assert stage.wait(timeout=15) == 143
    finally:
        for p in (stage, orchestrator):
            p.kill()
            p.wait()
