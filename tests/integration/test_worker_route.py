"""The training stages on a Prefect worker in its own clone; data only through the DVC remote.

Set up from nothing: the stack (the `stack` fixture of tests/integration/conftest.py, shared with
test_stack.py: PostgreSQL, SeaweedFS S3, the MLflow server with basic auth and S3 artifacts, the
Prefect server with its `gpu` process pool), the
`bertops-stage/gpu` deployment of prefect.yaml (`prefect deploy`), `prefect worker start --pool gpu`
in a separate `git clone` of the orchestrator's project (no shared working directory: the clone has
no data/ and no artifacts/), the stack's S3 bucket as the DVC remote of both. The pipeline flow runs
in the orchestrator's project on the tiny config with `gpu_deployment`. Checked: the training stages
(pretrain, finetune, distill, evaluate) ran on the worker (its flow runs, its checkpoints; nothing
trained in the orchestrator's folder), the orchestrator restored
them from DVC's run cache (dvc.lock complete, `dvc status` clean), a model is registered, the
run-time override is what the worker trained with (its MLflow params, children of the pipeline's
parent run), a second run (the nightly deployment served by flows/serve.py, triggered) sends
nothing to the worker and runs nothing, and a stage that fails on the worker fails the pipeline
with nothing registered (while a second run in the same workspace refuses, naming the first), and
a worker killed mid-pretraining fails the run, whose rerun on a second worker (a fresh clone)
resumes from the checkpoint the first one left in the object store.

A pipeline run through a worker takes minutes, so the module trains once: the route fixture's first
run is the one whose worker is killed mid-pretraining; its rerun on the second worker (which resumes)
is the completed run the other tests read.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_pipeline import TINY
from tests.helpers import copy_repo_files, git_commit_all, venv_bin

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "bertops-stage/gpu"
# given at run time (TINY commits 12 steps, a checkpoint every 6); enough steps after the first
# checkpoint for the worker to be killed mid-pretraining (the kill comes within 0.2 s of that
# checkpoint; the stage stops at the end of its batch: step 10 or 11, 30 steps short of the end)
OVERRIDE = {"pretrain.max_steps": 40, "pretrain.checkpoint_every_n_steps": 10}
SLIM_EVALUATE = {"evaluate.lr_grid": [], "evaluate.modes": [], "evaluate.bootstrap_samples": 100}  # 1 fine-tuning


def _run(cmd: list[str], cwd: Path, env: dict, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}")
    return proc


def _stop(proc: subprocess.Popen, grace: float = 20) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def start_worker(base: Path, env: dict, orch: Path, clone: Path, deploy: bool = False) -> subprocess.Popen:
    """A worker in its own `git clone` of the orchestrator's project at `clone` (no data, no
    artifacts, no checkpoints), with the stack's DVC remote: `prefect worker start --pool gpu` there
    (log: base/logs/<clone's name>.log). `deploy`: first `prefect deploy` the gpu deployment from it."""
    from bertops.stack import configure_dvc_remote

    _run(["git", "clone", "-q", str(orch), str(clone)], base, env)
    assert not (clone / "data").exists() and not (clone / "artifacts").exists()
    configure_dvc_remote(clone, env)  # env holds stack.env's keys
    worker_env = {**env, "BERTOPS_PROJECT_DIR": str(clone), "BERTOPS_REPO_URL": str(orch)}
    if deploy:
        _run([venv_bin("prefect"), "--no-prompt", "deploy", "--name", "gpu"], clone, worker_env)
    return subprocess.Popen([venv_bin("prefect"), "worker", "start", "--pool", "gpu"], cwd=clone,
                            env=worker_env, stdout=open(base / "logs" / f"{clone.name}.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


class Route:
    """Everything the tests look at; `pipeline(overrides)` runs the flow in the orchestrator's project."""

    def __init__(self, base: Path, env: dict, orch: Path, worker: Path):
        self.base, self.env, self.orch, self.worker = base, env, orch, worker

    def _pipeline_cmd(self, overrides: dict) -> list[str]:
        code = ("import json, sys; from flows.pipeline import pipeline; "
                f"pipeline(overrides=json.loads(sys.argv[1]), gpu_deployment={DEPLOYMENT!r})")
        return [sys.executable, "-c", code, json.dumps(overrides)]

    def pipeline(self, overrides: dict, check: bool = True) -> subprocess.CompletedProcess:
        return _run(self._pipeline_cmd(overrides), self.orch, self.env, check=check)

    def start_pipeline(self, overrides: dict) -> subprocess.Popen:
        return subprocess.Popen(self._pipeline_cmd(overrides), cwd=self.orch, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def mlflow(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.env["MLFLOW_TRACKING_URI"])

    def flow_runs(self, flow_name: str = "bertops-stage") -> list[tuple]:
        """(stage parameter, state name) of every run of `flow_name` on the server, oldest first."""
        import urllib.request

        body = json.dumps({"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_ASC"}).encode()
        headers = {"Content-Type": "application/json"}
        if self.env.get("PREFECT_API_AUTH_STRING"):  # the stack's Prefect server wants it, as Prefect's client sends it
            token = base64.b64encode(self.env["PREFECT_API_AUTH_STRING"].encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(f"{self.env['PREFECT_API_URL']}/flow_runs/filter", data=body, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            runs = json.load(r)
        return [(run["parameters"].get("stage"), (run.get("state") or {}).get("name")) for run in runs]

    def stage_flow_runs(self) -> list[tuple]:
        return self.flow_runs("bertops-stage")


def _kill_the_worker_mid_pretrain(route: Route) -> dict:
    """Start a pipeline run; once the worker has saved its first pretraining checkpoint, SIGKILL the
    worker's flow-run process. Returns what happened (test_a_worker_killed_... checks it), with the
    steps of the checkpoints in the object store before any rerun."""
    import io

    import boto3
    import psutil
    import torch

    last = route.worker / "artifacts/pretrain/checkpoints/last.ckpt"
    assert not last.exists()
    run = route.start_pipeline(OVERRIDE)
    deadline = time.monotonic() + 900
    while not last.exists():  # validate and tokenize run here first, then pretrain on the worker
        assert run.poll() is None, run.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint on the worker within 900 s"
        time.sleep(0.2)
    flow_processes = psutil.Process(route.worker_proc.pid).children()  # the flow run's process
    stage = flow_processes[0].children(recursive=True) if len(flow_processes) == 1 else []  # dvc and the stage
    for proc in flow_processes[:1]:
        proc.kill()
    _, alive = psutil.wait_procs(stage, timeout=120)  # the stage checkpoints and exits by itself
    logged, _ = run.communicate(timeout=600)
    s3 = boto3.client("s3", endpoint_url=route.env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                      aws_access_key_id=route.env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=route.env["AWS_SECRET_ACCESS_KEY"])
    bucket, _, prefix = route.env["BERTOPS_CHECKPOINT_STORE"].removeprefix("s3://").partition("/")
    stored = {o["Key"]: torch.load(io.BytesIO(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()),
                                   weights_only=False)["global_step"]
              for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/pretrain/").get("Contents", [])}
    return {"flow_processes": flow_processes, "alive": alive, "returncode": run.returncode, "logged": logged,
            "saved_step": torch.load(last, map_location="cpu", weights_only=False)["global_step"],
            "stored_steps": stored, "first_worker": route.worker}


@pytest.fixture(scope="module")
def route(tmp_path_factory, real_data_dir, stack):
    base = tmp_path_factory.mktemp("worker_route")
    orch, worker = base / "orchestrator", base / "worker"
    env = stack.client_env(PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                           PREFECT_HOME=str(base / "prefect-home"), BERTOPS_TRACKING="on",
                           PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_LOGGING_LEVEL="INFO")
    for key in ("BERTOPS_PARENT_RUN_ID", "BERTOPS_PROJECT_DIR", "BERTOPS_REPO_URL", "BERTOPS_EXPERIMENT"):
        env.pop(key, None)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update({k: env[k] for k in saved})  # this process's MLflow client
    procs: list[subprocess.Popen] = []
    logs = base / "logs"
    logs.mkdir()
    try:
        # the orchestrator's project: the repository's files, the data, the tiny params, one commit
        copy_repo_files(orch)
        shutil.copytree(real_data_dir, orch / "data")
        sys.path.insert(0, str(REPO))
        from flows.pipeline import apply_overrides

        apply_overrides(orch, {**TINY, **SLIM_EVALUATE})
        git_commit_all(orch, "tiny")
        _run([venv_bin("dvc"), "commit", "--force", "data.dvc"], orch, env)  # data/ into the DVC cache
        if _run(["git", "status", "--porcelain", "data.dvc"], orch, env).stdout.strip():
            _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "data"], orch, env)
        from bertops.stack import configure_dvc_remote

        configure_dvc_remote(orch, stack.env)  # the stack's S3 bucket, keys in .dvc/config.local
        worker_proc = start_worker(base, env, orch, worker, deploy=True)
        procs.append(worker_proc)
        # the nightly deployment, served from the orchestrator's project, training on the pool
        procs.append(subprocess.Popen([sys.executable, "-m", "flows.serve", "--gpu-deployment", DEPLOYMENT],
                                      cwd=orch, env={**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},  # default 10 s
                                      stdout=open(logs / "serve.log", "w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        r = Route(base, env, orch, worker)
        r.worker_proc, r.procs = worker_proc, procs
        t0 = time.monotonic()
        r.killed = _kill_the_worker_mid_pretrain(r)
        print(f"pipeline run whose worker was killed: {time.monotonic() - t0:.0f} s")
        # the killed worker's machine is gone; another worker, in its own fresh clone, takes the rerun
        _stop(r.worker_proc)
        r.worker = base / "worker-2"
        r.worker_proc = start_worker(base, env, orch, r.worker)
        procs.append(r.worker_proc)
        t0 = time.monotonic()
        r.first = r.pipeline(OVERRIDE)  # resumes; the first completed run
        r.first_seconds = time.monotonic() - t0
        r.first_status = _run([venv_bin("dvc"), "status"], orch, env).stdout
        print(f"its rerun through the second worker: {r.first_seconds:.0f} s")
        yield r
    finally:
        for proc in reversed(procs):  # serve, then the worker (the stack fixture stops the servers)
            _stop(proc)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_training_stages_run_on_the_worker_and_a_model_is_registered(route):
    from flows.pipeline import TRAINING_STAGES, dvc_stage_order

    sent = [s for s in dvc_stage_order(route.orch) if s in TRAINING_STAGES]
    assert {"pretrain", "finetune", "evaluate"} <= set(sent)
    # the killed run's pretraining (test_a_worker_killed_...), then the rerun's stages, in order
    assert route.stage_flow_runs() == [("pretrain", "Crashed")] + [(s, "Completed") for s in sent]
    # trained in the worker's clone, never in the orchestrator's folder
    assert (route.worker / "artifacts/pretrain/checkpoints/last.ckpt").exists()
    assert not (route.orch / "artifacts/pretrain/checkpoints").exists()
    for path in ("artifacts/pretrain/model", "artifacts/finetune/model", "artifacts/evaluate/report.md",
                 "metrics/pretrain.json", "metrics/evaluate.json"):
        assert (route.orch / path).exists(), path  # restored from DVC's run cache
    lock = yaml.safe_load((route.orch / "dvc.lock").read_text())["stages"]
    assert set(lock) >= {"validate", "tokenize", "pretrain", "finetune", "evaluate", "register"}
    assert lock["pretrain"]["params"]["params.yaml"]["pretrain"]["max_steps"] == OVERRIDE["pretrain.max_steps"]

    result = json.loads((route.orch / "artifacts/register/result.json").read_text())
    assert result["alias"] == "champion"
    client = route.mlflow()
    champion = client.get_model_version_by_alias("bertops", "champion")
    assert champion.version == result["version"]
    # artifacts in the object store, served by the MLflow server: a third directory loads the
    # champion with the server's URI and credentials only (no S3 keys, no checkout)
    third = route.base / "third"
    third.mkdir()
    env = {k: v for k, v in route.env.items() if not k.startswith(("AWS_", "BERTOPS_S3", "MLFLOW_S3"))}
    code = ("import mlflow, pandas as pd; m = mlflow.pyfunc.load_model('models:/bertops@champion'); "
            "print(m.predict(pd.DataFrame({'task': ['sentiment'], 'text': ['A warm, clever film.'], "
            "'text_pair': [None]})).to_json(orient='records'))")
    out = _run([sys.executable, "-c", code], third, env).stdout
    assert json.loads(out.strip().splitlines()[-1])[0]["task"] == "sentiment"


def test_a_worker_killed_mid_stage_fails_the_run_and_the_rerun_on_another_worker_resumes_from_the_store(route):
    """SIGKILL the worker's flow-run process during pretraining (the route fixture's first run): the
    stage notices (bertops.lifeline), saves last.ckpt, which also goes to the object store
    ($BERTOPS_CHECKPOINT_STORE from stack.env: s3://checkpoints/bertops/pretrain/<fingerprint>/), and
    exits; the flow run is Crashed, so the pipeline fails. That worker is then stopped and a second
    worker starts in a fresh clone (no checkpoint of its own): the rerun goes to it and resumes from
    the stored checkpoint's step."""
    import torch

    killed = route.killed
    assert len(killed["flow_processes"]) == 1, killed["flow_processes"]
    assert not killed["alive"], killed["alive"]
    logged = killed["logged"]
    assert killed["returncode"] != 0, logged[-4000:]
    assert f"stage 'pretrain' on {DEPLOYMENT}" in logged and "ended Crashed" in logged, logged[-4000:]
    saved, steps = killed["saved_step"], OVERRIDE["pretrain.max_steps"]
    assert 0 < saved < steps
    # keyed by fingerprint: one directory per settings and data
    assert saved in killed["stored_steps"].values(), killed["stored_steps"]

    metrics = json.loads((route.orch / "artifacts/pretrain/metrics.json").read_text())  # restored from the run cache
    assert metrics["global_step"] == steps and metrics["resumed_from_step"] == saved, metrics
    assert route.worker != killed["first_worker"]
    assert torch.load(route.worker / "artifacts/pretrain/checkpoints/last.ckpt", map_location="cpu",
                      weights_only=False)["global_step"] == steps  # trained in the second clone
    assert torch.load(killed["first_worker"] / "artifacts/pretrain/checkpoints/last.ckpt", map_location="cpu",
                      weights_only=False)["global_step"] == saved  # not in the first
    result = json.loads((route.orch / "artifacts/register/result.json").read_text())
    assert result["alias"] == "champion" and int(result["version"]) >= 1  # the rerun registered
    assert route.first_status.strip().endswith("up to date."), route.first_status


def test_the_worker_trained_with_the_run_time_override_as_children_of_the_pipeline_run(route):
    client = route.mlflow()
    runs = client.search_runs([client.get_experiment_by_name("bertops").experiment_id],
                              order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get("bertops.stage") == "pipeline"]
    # one parent run per pipeline run: the killed run's (validate, tokenize, the killed pretraining)
    # and its rerun's (pretrain onward; validate and tokenize are skipped, unchanged)
    assert [p.info.status for p in parents] == ["FAILED", "FINISHED"], [p.info.status for p in parents]
    by_stage = {r.data.tags["bertops.stage"]: r for r in runs if r.data.tags.get("bertops.stage") != "pipeline"}
    for stage in ("validate", "tokenize", "pretrain", "finetune", "evaluate", "register"):
        ran_in = [p for p in parents if p.info.start_time <= by_stage[stage].info.start_time][-1]
        assert by_stage[stage].data.tags.get("mlflow.parentRunId") == ran_in.info.run_id, stage
    assert by_stage["validate"].data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert by_stage["pretrain"].data.tags["mlflow.parentRunId"] == parents[1].info.run_id
    pretrain = by_stage["pretrain"]
    assert pretrain.data.params["pretrain.max_steps"] == str(OVERRIDE["pretrain.max_steps"])
    assert pretrain.data.metrics["heldout.global_step"] == OVERRIDE["pretrain.max_steps"]
    # the worker's process, not the orchestrator's, owned the training runs
    owners = {s: by_stage[s].data.tags["bertops.process"] for s in by_stage}
    assert owners["pretrain"] != owners["validate"]


def test_the_orchestrator_is_clean_and_the_triggered_nightly_run_runs_nothing(route):
    """The second run is the nightly deployment (flows/serve.py, served against the Prefect server),
    triggered by hand: it completes, sends nothing to the worker and changes nothing."""
    dvc_status = _run([venv_bin("dvc"), "status"], route.orch, route.env).stdout
    assert dvc_status.strip().endswith("up to date."), dvc_status
    lock_before = (route.orch / "dvc.lock").read_text()
    versions = len(route.mlflow().search_model_versions("name='bertops'"))
    stage_runs = len(route.stage_flow_runs())

    out = _run([venv_bin("prefect"), "deployment", "run", "bertops-pipeline/nightly-retrain",
                "--params", json.dumps({"overrides": OVERRIDE}), "--watch", "--watch-interval", "1",
                "--watch-timeout", "600"],
               route.orch, route.env)
    assert "Completed" in out.stdout + out.stderr, out.stdout[-3000:]
    # the runs called directly (the killed one, its rerun) and the triggered one; the schedule's
    # next run waits for 02:00
    ran = [state for _, state in route.flow_runs("bertops-pipeline") if state != "Scheduled"]
    assert ran == ["Failed", "Completed", "Completed"], ran
    assert len(route.stage_flow_runs()) == stage_runs  # nothing sent to the worker: nothing changed
    assert (route.orch / "dvc.lock").read_text() == lock_before
    assert len(route.mlflow().search_model_versions("name='bertops'")) == versions
    assert _run([venv_bin("dvc"), "status"], route.orch, route.env).stdout.strip().endswith("up to date.")


def test_a_stage_failing_on_the_worker_fails_the_pipeline_and_a_second_run_meanwhile_refuses(route):
    """The failing run holds the workspace; a second pipeline run in the same folder meanwhile refuses
    at once, naming it (flows/workspace.py). Nothing is registered; dvc.lock keeps the good run."""
    versions = len(route.mlflow().search_model_versions("name='bertops'"))
    # fine for the parameter checks, but no batch of that size fits the tiny data: pretrain fails
    failing = route.start_pipeline({**OVERRIDE, "pretrain.batch_size": 100000})
    holder = route.orch / ".dvc" / "tmp" / "bertops-pipeline.lock"
    deadline = time.monotonic() + 300
    while not (holder.exists() and holder.read_text().strip()):
        assert failing.poll() is None, failing.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "the first run never took the workspace"
        time.sleep(0.2)
    first_run = json.loads(holder.read_text())["flow_run"]
    second = route.pipeline(OVERRIDE, check=False)
    refused = second.stdout + second.stderr
    assert second.returncode != 0 and "another pipeline run is using" in refused, refused[-3000:]
    assert first_run in refused

    logged, _ = failing.communicate(timeout=900)
    assert failing.returncode != 0, logged[-4000:]
    assert f"stage 'pretrain' on {DEPLOYMENT}" in logged and "ended Failed" in logged, logged[-4000:]
    assert route.stage_flow_runs()[-1] == ("pretrain", "Failed")
    assert len(route.mlflow().search_model_versions("name='bertops'")) == versions
    lock = yaml.safe_load((route.orch / "dvc.lock").read_text())["stages"]
    assert lock["pretrain"]["params"]["params.yaml"]["pretrain"]["batch_size"] != 100000
    assert not holder.read_text().strip()  # released
