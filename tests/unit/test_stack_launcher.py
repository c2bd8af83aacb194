"""bertops.stack without starting the stack: errors name the service and its log, ports, secrets, stack.env."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from bertops.stack import Stack, StackConfig, StackError, free_ports, load_env
from bertops.stack.proc import running_pid, spawn, stop_group, wait_until, write_pid


def test_a_service_that_dies_is_named_with_its_log(tmp_path):
    log = tmp_path / "svc.log"
    proc = spawn([sys.executable, "-c", "print('port 1 is taken'); raise SystemExit(3)"], log, {})
    with pytest.raises(StackError) as err:
        wait_until("Demo server", lambda: False, 30, log, proc)
    msg = str(err.value)
    assert "Demo server exited with status 3" in msg and str(log) in msg and "port 1 is taken" in msg


def test_a_service_that_never_answers_times_out_with_its_log(tmp_path):
    log = tmp_path / "svc.log"
    log.write_text("still booting\n")
    with pytest.raises(StackError) as err:
        wait_until("Slow server", lambda: 1 / 0, 1, log)
    msg = str(err.value)
    assert "Slow server was not healthy after 1 s (ZeroDivisionError" in msg and str(log) in msg


def test_stop_group_ends_the_whole_group_and_pid_files_name_one_process(tmp_path):
    log = tmp_path / "x.log"
    proc = spawn(["bash", "-c", "trap '' TERM; sleep 60 & echo ready; wait"], log, {})  # ignores SIGTERM
    deadline = time.monotonic() + 10  # a SIGTERM before bash set its trap would end it: wait until it has
    while "ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    write_pid(tmp_path / "x.pid", proc.pid)
    assert running_pid(tmp_path / "x.pid") == proc.pid
    assert stop_group(proc.pid, grace_seconds=0.5) is True  # SIGKILLed
    assert running_pid(tmp_path / "x.pid") is None
    (tmp_path / "y.pid").write_text(f"{socket.gethostname()}:{proc.pid}:1\n")  # another start time: not ours
    assert running_pid(tmp_path / "y.pid") is None


def test_up_refuses_ports_in_use_naming_them(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = free_ports() | {"mlflow": busy.getsockname()[1]}
        stack = Stack(tmp_path / "stack", StackConfig(ports=ports))
        with pytest.raises(StackError, match=rf"mlflow \(127.0.0.1:{ports['mlflow']}\)"):
            stack.up(log=lambda msg: None)
    assert stack.pids() == dict.fromkeys(["postgres", "objectstore", "mlflow", "prefect"])


def test_secrets_are_generated_kept_and_private(tmp_path):
    first = Stack(tmp_path / "a")
    first._save_state()
    first._write_env()
    again, other = Stack(tmp_path / "a"), Stack(tmp_path / "b")
    assert again.secrets == first.secrets and other.secrets != first.secrets
    assert all(len(v) >= 12 and v.isalnum() for v in first.secrets.values())
    assert "password1234" not in (tmp_path / "a" / "stack.env").read_text()
    for name in ("state.json", "stack.env"):
        assert (tmp_path / "a" / name).stat().st_mode & 0o077 == 0
    env = load_env(tmp_path / "a")
    assert env["MLFLOW_TRACKING_PASSWORD"] == first.secrets["mlflow_admin_password"]
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5050" and env["BERTOPS_DVC_REMOTE_URL"] == "s3://dvc/store"
    sourced = subprocess.run(["bash", "-c", f"source {tmp_path / 'a' / 'stack.env'} && echo $PREFECT_API_AUTH_STRING"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert sourced == env["PREFECT_API_AUTH_STRING"] == f"admin:{first.secrets['prefect_password']}"


def test_a_later_up_keeps_the_first_configuration(tmp_path):
    first = Stack(tmp_path / "s", StackConfig(ports=free_ports()))
    first._save_state()
    again = Stack(tmp_path / "s", StackConfig())  # default ports asked for: the first up's are kept
    assert again.config.ports == first.config.ports and again.config_ignored


def test_dvc_remote_settings_come_from_a_file_the_environment_or_the_state_dir(tmp_path, monkeypatch):
    from argparse import Namespace

    from bertops.stack.__main__ import _remote_env
    from bertops.stack.dvc_remote import REMOTE_KEYS

    stack = Stack(tmp_path / "s")
    stack._save_state()
    stack._write_env()
    copied = tmp_path / "copied.env"
    copied.write_text("export BERTOPS_DVC_REMOTE_URL=s3://dvc/copied\n")
    for key in REMOTE_KEYS:
        monkeypatch.delenv(key, raising=False)
    args = Namespace(env_file=None, state_dir=tmp_path / "s")
    assert _remote_env(args)["BERTOPS_DVC_REMOTE_URL"] == "s3://dvc/store"
    monkeypatch.setenv("BERTOPS_DVC_REMOTE_URL", "s3://dvc/sourced")
    monkeypatch.setenv("BERTOPS_S3_ENDPOINT_URL", "http://objects.example:8333")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    assert _remote_env(args)["BERTOPS_DVC_REMOTE_URL"] == "s3://dvc/sourced"
    args.env_file = copied
    assert _remote_env(args)["BERTOPS_DVC_REMOTE_URL"] == "s3://dvc/copied"
