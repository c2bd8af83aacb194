"""The server host of the README's "Real machines": `python -m bertops.stack up --bind 0.0.0.0
--advertise HOST`. Started from nothing with this machine's non-loopback address as HOST: stack.env
gives clients HOST's URLs; MLflow, Prefect and the S3 gateway listen on every interface while
PostgreSQL stays on loopback; through HOST the servers still refuse requests without credentials (and
MLflow a Host header it was not told about), and a client with stack.env's URI and credentials logs a
run with an artifact. One machine only: a second host is not tested."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.integration.test_stack import CLIENT_KEYS, status_of
from tests.stack_helpers import start_stack, stop_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLIENT = textwrap.dedent("""
    import mlflow
    from pathlib import Path
    mlflow.set_experiment("bind-smoke")
    with mlflow.start_run() as run:
        mlflow.log_metric("x", 1.0)
        Path("note.txt").write_text("through the advertised address")
        mlflow.log_artifact("note.txt")
    print(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/note.txt"))
""")


def _host_address() -> str | None:
    """This machine's first non-loopback IPv4 address (what another host would reach it by)."""
    import socket

    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


def test_bind_all_interfaces_advertise_the_host_keep_postgres_on_loopback(tmp_path):
    import psutil

    host = _host_address()
    if host is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    running = start_stack(prefix="bertops-bind-", bind="0.0.0.0", advertise=host)
    try:
        env, stack = running.env, running.stack
        ports = stack.config.ports
        assert env["MLFLOW_TRACKING_URI"] == f"http://{host}:{ports['mlflow']}"
        assert env["PREFECT_API_URL"].startswith(f"http://{host}:{ports['prefect']}/")
        assert env["BERTOPS_S3_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL_S3"] == f"http://{host}:{ports['s3']}"

        listening: dict[str, set[str]] = {}
        for name, pid in stack.pids().items():
            for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        listening.setdefault(name, set()).add(conn.laddr.ip)
        assert listening["postgres"] == {"127.0.0.1"}, listening
        for name in ("mlflow", "prefect", "objectstore"):
            assert listening[name] <= {"0.0.0.0", "::"} and listening[name], listening

        uri = env["MLFLOW_TRACKING_URI"]
        ours = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        url = f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
        assert status_of(url) == 401
        assert status_of(url, ours) == 200
        assert status_of(url, ours, host=f"elsewhere.example:{ports['mlflow']}") == 403  # --allowed-hosts
        user, _, password = env["PREFECT_API_AUTH_STRING"].partition(":")
        assert status_of(f"{env['PREFECT_API_URL']}/work_pools/filter", method="POST", body=b"{}") == 401
        assert status_of(f"{env['PREFECT_API_URL']}/health", (user, password)) == 200
        assert status_of(f"{env['BERTOPS_S3_ENDPOINT_URL']}/mlflow/") == 403  # anonymous S3

        client_env = {k: v for k, v in running.client_env(HOME=str(tmp_path)).items() if k not in CLIENT_KEYS}
        out = subprocess.run([sys.executable, "-c", CLIENT], cwd=tmp_path, env=client_env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip().splitlines()[-1] == "through the advertised address"
    finally:
        stop_stack(running)
