"""`kill -9` on a running `bertops run` during pretraining, then `bertops run` again, as an operator
would (real processes: the Prefect flow, dvc, the stage).

The project is a copy of this repository whose dvc.yaml keeps only the pretrain stage, with the
tiny tokenizer and NSP dataset of tests/pretrain_helpers.py standing in for the tokenize stage's
outputs, and a tiny model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.helpers import copy_repo_files, git_commit_all, project_env, venv_bin
from tests.pretrain_helpers import tiny_pretrain_overrides, write_tiny_pretraining_inputs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 40


def _pretrain_only_project(dest: Path) -> Path:
    copy_repo_files(dest)
    write_tiny_pretraining_inputs(dest / "artifacts", n_train=256, n_val=32)
    dvc = yaml.safe_load((dest / "dvc.yaml").read_text())
    dvc["stages"] = {"pretrain": dvc["stages"]["pretrain"]}
    dvc.pop("plots", None)
    (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    sys.path.insert(0, str(REPO))
    from flows.pipeline import apply_overrides

    apply_overrides(dest, tiny_pretrain_overrides(
        "artifacts/pretraining_data", "artifacts/tokenizer", "artifacts/pretrain", batch_size=8,
        max_steps=MAX_STEPS, checkpoint_every_n_steps=5, eval_every_n_steps=None, eval_max_batches=1))
    git_commit_all(dest, "pretrain only")
    return dest


def _start_run(project: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # its own session: the test can clean up whatever it leaves
        return subprocess.Popen([venv_bin("bertops"), "run"], cwd=project, env=project_env(project),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stage_processes(orchestrator: psutil.Process) -> list[psutil.Process]:
    """`dvc repro --single-item pretrain` under the orchestrator and everything it started (the stage)."""
    for child in orchestrator.children(recursive=True):
        try:
            if "repro" in child.cmdline():
                return [child, *child.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return []


def _kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def test_killing_the_orchestrator_stops_the_stage_and_the_rerun_resumes(tmp_path):
    project = _pretrain_only_project(tmp_path / "project")
    ckpt = project / "artifacts/pretrain/checkpoints/last.ckpt"
    first = _start_run(project, tmp_path / "first.log")
    leftovers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        while not ckpt.exists():  # pretraining has saved a checkpoint
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.1)
        orchestrator = psutil.Process(first.pid)
        stage = _stage_processes(orchestrator)
        leftovers = orchestrator.children(recursive=True)
        assert len(stage) >= 2, stage  # dvc and the stage's command

        os.kill(first.pid, signal.SIGKILL)  # the orchestrator, not the stage
        first.wait()
        killed_at = time.monotonic()
        second = _start_run(project, tmp_path / "second.log")  # at once: the old stage may hold DVC's lock
        leftovers += [psutil.Process(second.pid)]

        # the stage notices, saves a checkpoint at the step it reached and exits; dvc exits with it
        gone, alive = psutil.wait_procs(stage, timeout=60)
        assert not alive, f"still running {time.monotonic() - killed_at:.0f} s after the orchestrator died: {alive}"
        print(f"the stage and dvc exited {time.monotonic() - killed_at:.1f} s after the orchestrator was killed")

        assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-5000:]
    finally:
        _kill_all(leftovers)
        first.kill()

    metrics = json.loads((project / "artifacts/pretrain/metrics.json").read_text())
    assert metrics["global_step"] == MAX_STEPS
    # resumed from the checkpoint the stage saved when it stopped, not one at the end: it did not
    # train on without its orchestrator
    assert 0 < metrics["resumed_from_step"] < MAX_STEPS
    for out in ("model/model.safetensors", "plots/pretrain_curves.png", "logs/metrics.csv", "metrics.json"):
        assert (project / "artifacts/pretrain" / out).exists(), out
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert "pretrain" in lock["stages"]

    # MLflow: the killed run's pipeline run was RUNNING with nobody to end it; the rerun ended it
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("bertops").experiment_id],
                              order_by=["attributes.start_time ASC"])
    pipelines = [r for r in runs if r.data.tags.get("bertops.stage") == "pipeline"]
    assert [r.info.status for r in pipelines] == ["KILLED", "FINISHED"]
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_stage_waits_for_the_dvc_lock_another_process_holds(tmp_path):
    """run_dvc_stage, refused by dvc because another `dvc repro` holds the stage's lock (the stage of a
    killed run, still checkpointing), waits and retries instead of failing; it gives up after its limit."""
    sys.path.insert(0, str(REPO))
    from flows.pipeline import run_dvc_stage

    slow = f"{sys.executable} -c \"import pathlib, time; time.sleep(8); pathlib.Path('out.txt').write_text('x')\""
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"slow": {"cmd": slow, "outs": ["out.txt"]}}}))
    env = project_env(tmp_path)
    subprocess.run([venv_bin("dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    holder = subprocess.Popen([venv_bin("dvc"), "repro", "--single-item", "slow"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in holder.stdout:  # the stage runs: dvc holds its lock
            if line.startswith("Running stage"):
                break
        code, lines = run_dvc_stage("slow", str(tmp_path), {}, log=lambda _: None, lock_wait_seconds=1,
                                    lock_retry_seconds=0.5)
        assert code != 0 and any("is busy" in ln for ln in lines)  # a short limit: gives up

        logged: list[str] = []
        code, lines = run_dvc_stage("slow", str(tmp_path), {}, log=logged.append, lock_retry_seconds=1)
        assert code == 0, "\n".join(lines)
        assert holder.wait(timeout=60) == 0
        waits = [ln for ln in logged if "waits for DVC's lock" in ln]
        assert waits and f"(PID {holder.pid})" in waits[0], logged
        assert any("didn't change, skipping" in ln for ln in lines)  # the holder's result, not run twice
    finally:
        holder.kill()
