"""The scale-out stack (bertops.stack) on loopback, started from nothing (the `stack` fixture of
tests/integration/conftest.py, shared with test_worker_route.py, which then gets the stack as this
module leaves it: restarted by the last test here, its data kept).

PostgreSQL, SeaweedFS (S3), the MLflow server (basic auth, proxied artifacts) and the Prefect
server (auth string, `gpu` pool): health, refusals, eight concurrent MLflow clients with no S3 keys,
a registered model loaded by alias from another directory, `bertops champion-diff` on the server,
the DVC remote, a checkpoint's round trip through the checkpoint store (S3), and `down`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

CLIENT_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "BERTOPS_S3_ENDPOINT_URL",
               "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def mlflow_client_env(stack, tmp_path) -> dict[str, str]:
    """A client's environment: the tracking URI and credentials, no S3 key or endpoint at all."""
    env = {k: v for k, v in stack.client_env().items() if k not in CLIENT_KEYS}
    env.update(HOME=str(tmp_path), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    return env


def status_of(url: str, auth: tuple[str, str] | None = None, host: str | None = None,
              method: str = "GET", body: bytes | None = None) -> int:
    req = urllib.request.Request(url, method=method, data=body)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    if host is not None:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_stack_comes_up_healthy_on_loopback(stack):
    import psutil

    status = stack.stack.status()
    assert all(s["running"] for s in status.values()), status
    print("startup seconds:", json.dumps({k: round(v, 1) for k, v in stack.startup_seconds.items()}))
    listening = set()
    secrets = [v for v in stack.stack.secrets.values() if len(v) > 16]
    for name, pid in stack.stack.pids().items():
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
        for proc in procs:
            cmdline = " ".join(proc.cmdline())
            assert not [s for s in secrets if s in cmdline], f"a secret is visible in `ps`: {name} {proc.pid}"
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.add((name, conn.laddr.ip, conn.laddr.port))
    assert listening and {ip for _, ip, _ in listening} == {"127.0.0.1"}, listening
    env_file = stack.state_dir / "stack.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_URL",
            "PREFECT_API_AUTH_STRING", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BERTOPS_DVC_REMOTE_URL",
            "BERTOPS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "BERTOPS_CHECKPOINT_STORE"} <= set(stack.env)
    assert stack.env["BERTOPS_CHECKPOINT_STORE"] == "s3://checkpoints/bertops"


def test_up_again_starts_nothing(stack):
    pids = stack.stack.pids()
    timings = stack.stack.up(log=lambda msg: None)
    assert not {"postgres", "objectstore", "mlflow", "prefect"} & set(timings)
    assert stack.stack.pids() == pids


def test_mlflow_refuses_without_the_generated_password(stack):
    uri = stack.env["MLFLOW_TRACKING_URI"]
    url = f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    ours = (stack.env["MLFLOW_TRACKING_USERNAME"], stack.env["MLFLOW_TRACKING_PASSWORD"])
    assert status_of(url) == 401
    assert status_of(url, ("admin", "password1234")) == 401  # MLflow's old default admin password
    assert status_of(url, ("admin", ours[1] + "x")) == 401
    assert status_of(url, ours) == 200
    assert status_of(url, ours, host="attacker.example:80") == 403  # --allowed-hosts


def test_prefect_refuses_without_the_auth_string_and_has_the_gpu_pool(stack):
    api = stack.env["PREFECT_API_URL"]
    user, _, password = stack.env["PREFECT_API_AUTH_STRING"].partition(":")
    assert status_of(f"{api}/work_pools/filter", method="POST", body=b"{}") == 401
    assert status_of(f"{api}/work_pools/filter", (user, "wrong"), method="POST", body=b"{}") == 401
    req = urllib.request.Request(f"{api}/work_pools/gpu", headers={
        "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as r:
        pool = json.load(r)
    assert (pool["type"], pool["concurrency_limit"]) == ("process", 1)


def test_s3_refuses_a_wrong_key(stack):
    from botocore.exceptions import ClientError

    store = stack.stack.objectstore
    assert {"mlflow", "dvc"} <= {b["Name"] for b in store.client().list_buckets()["Buckets"]}
    for access, secret, code in ((store.access_key, "not-the-secret", "SignatureDoesNotMatch"),
                                 ("nobody", "nothing", "InvalidAccessKeyId")):
        with pytest.raises(ClientError) as err:
            store.client(access, secret).list_objects_v2(Bucket="mlflow")
        assert err.value.response["Error"]["Code"] == code
    assert status_of(f"{store.local_endpoint}/mlflow/") == 403  # anonymous


LOGGED: dict[str, list[str]] = {}  # run ids a later test checks after a restart
# mlflow.set_experiment(name) has a race (MLflow 3.17): the process whose create_experiment loses to
# another's gets RESOURCE_ALREADY_EXISTS, returns without making the experiment active, and its run
# lands in experiment 0 (Default), seen here 2 times in 5. Clients starting at once resolve the id first.
CLIENT = textwrap.dedent("""
    import sys, mlflow
    from pathlib import Path
    from mlflow.exceptions import MlflowException
    i = int(sys.argv[1])
    client = mlflow.MlflowClient()
    try:
        exp = client.get_experiment_by_name("concurrent-clients")
        exp_id = exp.experiment_id if exp else client.create_experiment("concurrent-clients")
    except MlflowException:  # created by another client in between
        exp_id = client.get_experiment_by_name("concurrent-clients").experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    with mlflow.start_run(run_name=f"client-{i}") as run:
        mlflow.log_params({"client": i, "lr": 0.001 * i})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1 + i), step=step)
        Path(f"report-{i}.txt").write_text(f"client {i}\\n" * 1000)
        mlflow.log_artifact(f"report-{i}.txt", artifact_path="reports")
    print(run.info.run_id)
""")


def test_eight_concurrent_clients_log_runs_and_artifacts_without_s3_keys(stack, tmp_path, monkeypatch):
    env = mlflow_client_env(stack, tmp_path)
    (tmp_path / "client.py").write_text(CLIENT)
    procs = [subprocess.Popen([sys.executable, "client.py", str(i)], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(8)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    failed = [err[-2000:] for rc, _, err in results if rc != 0]
    assert not failed, "\n---\n".join(failed)
    run_ids = {out.strip().splitlines()[-1] for _, out, _ in results}
    assert len(run_ids) == 8
    LOGGED["concurrent"] = sorted(run_ids)

    s3 = stack.stack.objectstore.client()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mlflow", Prefix="artifacts/")
            for o in page.get("Contents", [])]
    for run_id in run_ids:
        assert any(f"/{run_id}/artifacts/reports/report-" in k for k in keys), (run_id, keys)

    import mlflow

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, stack.env[key])
    runs = [mlflow.MlflowClient(stack.env["MLFLOW_TRACKING_URI"]).get_run(r) for r in run_ids]
    assert sorted(int(r.data.params["client"]) for r in runs) == list(range(8))
    assert all(r.info.status == "FINISHED" and r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)
    assert len({r.info.experiment_id for r in runs}) == 1


REGISTER = textwrap.dedent("""
    import mlflow, pandas as pd
    from mlflow import MlflowClient
    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input[["x"]] * 2
    mlflow.set_experiment("registry")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Doubler(), pip_requirements=["pandas"],
                                       registered_model_name="stack-doubler",
                                       input_example=pd.DataFrame({"x": [1.0]}))
    client = MlflowClient()
    client.set_registered_model_alias("stack-doubler", "champion", info.registered_model_version)
    print(info.registered_model_version)
""")
LOAD = textwrap.dedent("""
    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model("models:/stack-doubler@champion")
    print(model.predict(pd.DataFrame({"x": [1.5, 4.0]}))["x"].tolist())
""")


def test_registered_model_loads_by_alias_from_another_directory(stack, tmp_path):
    env = mlflow_client_env(stack, tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = subprocess.run([sys.executable, "-c", REGISTER], cwd=tmp_path / "a", env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    out = subprocess.run([sys.executable, "-c", LOAD], cwd=tmp_path / "b", env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[3.0, 8.0]"
    keys = [o["Key"] for o in stack.stack.objectstore.client().list_objects_v2(
        Bucket="mlflow", Prefix="artifacts/").get("Contents", [])]
    assert any(k.endswith("/MLmodel") for k in keys), keys


def test_champion_diff_on_the_server_with_its_credentials_only(stack, tmp_path):
    """`bertops champion-diff` (what CI runs) against the MLflow server: with the server's URI and
    credentials alone it answers (no champion of `bertops` on this server: said so, exit 0); with a
    wrong password it exits non-zero naming the server, instead of claiming there is no champion."""
    from flows.pipeline import apply_overrides
    from tests.integration.test_champion_diff import _workspace

    root = _workspace(tmp_path / "ws", gate=0.5, test_score=0.4)
    # a model name of its own: test_worker_route registers `bertops` on the same (shared) server
    apply_overrides(root, {"register.model_name": "stack-champion-diff"})
    env = mlflow_client_env(stack, tmp_path)
    cmd = [str(Path(sys.executable).with_name("bertops")), "champion-diff", "--params", str(root / "params.yaml")]
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "**No champion yet**: no registered model 'stack-champion-diff'" in out.stdout
    env["MLFLOW_TRACKING_PASSWORD"] += "x"
    out = subprocess.run(cmd, cwd=root, env={**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and stack.env["MLFLOW_TRACKING_URI"] in out.stderr, out.stderr[-3000:]
    assert "No champion" not in out.stdout


def test_dvc_remote_helper_pushes_to_the_bucket(stack, tmp_path):
    from bertops.stack import configure_dvc_remote

    env = {k: v for k, v in stack.client_env(HOME=str(tmp_path)).items() if not k.startswith("AWS_")}
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = os.path.join(os.path.dirname(sys.executable), "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    configure_dvc_remote(repo, stack.env)
    assert "secret_access_key" not in (repo / ".dvc" / "config").read_text()
    (repo / "blob.txt").write_text("stack remote\n" * 100)
    for cmd in ([dvc, "add", "-q", "blob.txt"], [dvc, "push", "-q"]):
        out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
    keys = [o["Key"] for o in stack.stack.objectstore.client().list_objects_v2(
        Bucket="dvc", Prefix="store/").get("Contents", [])]
    assert any(k.startswith("store/files/md5/") for k in keys), keys


STORE_CLIENT = textwrap.dedent("""
    import os, sys, torch
    from pathlib import Path
    from bertops.errors import BertopsError
    from bertops.train.checkpointing import AtomicCheckpointIO, fetch_stored_checkpoint
    store = os.environ["BERTOPS_CHECKPOINT_STORE"] + "/pretrain/fp-test"
    ckpt = {"global_step": 7, "state_dict": {"w": torch.ones(3)}, "bertops": {"fingerprint": "fp-test"}}
    if sys.argv[1] == "save":
        AtomicCheckpointIO(store=store).save_checkpoint(ckpt, Path("a/last.ckpt"))
    try:
        print("fetched", fetch_stored_checkpoint(Path("b"), store, "fp-test"))
    except BertopsError as e:
        print("refused", e)
""")


def test_checkpoint_store_round_trip_through_s3_with_the_stack_env_only(stack, tmp_path):
    """What a worker does with $BERTOPS_CHECKPOINT_STORE: stack.env's keys and AWS_ENDPOINT_URL_S3 are
    all s3fs needs to copy a checkpoint into the bucket and fetch it into another folder; a wrong key
    stops the fetch with a message naming the store."""
    env = {k: v for k, v in stack.client_env(HOME=str(tmp_path)).items()
           if not k.startswith(("MLFLOW_S3", "BERTOPS_S3"))}
    out = subprocess.run([sys.executable, "-c", STORE_CLIENT, "save"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1:] == ["fetched 7"], out.stdout + out.stderr[-3000:]
    assert (tmp_path / "b" / "last.ckpt").exists()
    # this fingerprint's folder only: test_worker_route's checkpoints (same shared stack) have their own
    keys = [o["Key"] for o in stack.stack.objectstore.client().list_objects_v2(
        Bucket="checkpoints", Prefix="bertops/pretrain/fp-test/").get("Contents", [])]
    assert keys == ["bertops/pretrain/fp-test/last.ckpt"], keys
    env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    out = subprocess.run([sys.executable, "-c", STORE_CLIENT, "fetch"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert "refused checkpoint store s3://checkpoints/bertops/pretrain/fp-test: cannot read it" in out.stdout, \
        out.stdout + out.stderr[-3000:]


def test_down_leaves_no_process_running_and_up_again_keeps_the_data(stack, tmp_path, monkeypatch):
    import mlflow
    import psutil

    pids = stack.stack.pids()
    groups = {name: [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
              for name, pid in pids.items()}
    stack.stack.down(log=lambda msg: print(f"[stack] {msg}"))
    assert stack.stack.pids() == dict.fromkeys(pids)
    alive = {name: [p for p in group if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
             for name, group in groups.items()}
    assert not any(alive.values()), alive

    timings = stack.stack.up(log=lambda msg: print(f"[stack] {msg}"))  # the data stayed: same runs, same bytes
    print("restart seconds:", json.dumps({k: round(v, 1) for k, v in timings.items()}))
    assert {"postgres", "objectstore", "mlflow", "prefect"} <= set(timings)
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, stack.env[key])
    for key in CLIENT_KEYS:
        monkeypatch.delenv(key, raising=False)
    uri = stack.env["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(uri)
    runs = [client.get_run(run_id) for run_id in LOGGED["concurrent"]]
    found = client.search_runs([client.get_experiment_by_name("concurrent-clients").experiment_id])
    missing = set(LOGGED["concurrent"]) - {r.info.run_id for r in found}
    assert not missing, (len(found), [(r.info.run_id, r.info.status, r.info.lifecycle_stage, r.info.experiment_id,
                                       r.info.start_time, r.info.end_time) for r in runs if r.info.run_id in missing])
    got = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path="reports",
                                              dst_path=str(tmp_path), tracking_uri=uri)
    i = runs[0].data.params["client"]
    assert (Path(got) / f"report-{i}.txt").read_text() == f"client {i}\n" * 1000
