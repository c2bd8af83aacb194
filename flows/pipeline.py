"""The bertops pipeline as a Prefect flow: one task per DVC stage, in the order dvc.yaml defines.

Each task runs `dvc repro --single-item STAGE`, so a Prefect run updates dvc.lock and skips
unchanged stages exactly as `dvc repro` does; there is no second list of stages to drift.
The flow opens one MLflow parent run; every stage's run is its child. Training stages can be
sent to a GPU work pool (`gpu_deployment`): flows/worker.py runs them in the worker's own checkout.

    python -m flows.pipeline              # run once (Prefect's temporary local server)
    bertops run -S pretrain.max_steps=50  # the same, with parameter overrides
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bertops.env import apply_offline_env

apply_offline_env()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAINING_STAGES = ("pretrain", "finetune", "distill", "evaluate")  # sent to `gpu_deployment` when given
USER_ERROR_MARK = "bertops: error:"


class StageFailed(RuntimeError):
    def __init__(self, stage: str, returncode: int, tail: str):
        self.stage, self.returncode, self.tail = stage, returncode, tail
        self.user_error = USER_ERROR_MARK in tail
        super().__init__(f"stage {stage!r} failed (exit {returncode}):\n{tail}")


def dvc_stage_order(root: Path = ROOT) -> list[str]:
    """Pipeline stages of dvc.yaml in dependency order, read from DVC's own graph."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        order = list(reversed(list(nx.topological_sort(graph))))
        return [s.name for s in order if isinstance(s, PipelineStage)]


def apply_overrides(root: Path, overrides: dict[str, Any]) -> None:
    """Write parameter overrides into params.yaml, as `dvc exp run -S` does in the workspace,
    so DVC sees (and records in dvc.lock) exactly the parameters the run used."""
    if not overrides:
        return
    from ruamel.yaml import YAML

    from bertops.config import Params, apply_override, load_params_dict
    from bertops.config_tasks import check_tasks

    check_tasks(Params.model_validate(load_params_dict(root / "params.yaml", overrides)))  # fail before writing
    yaml = YAML()
    yaml.preserve_quotes = True
    path = root / "params.yaml"
    tree = yaml.load(path.read_text())
    for dotted, value in overrides.items():
        apply_override(tree, dotted, value)  # config's walker: the same keys load_params validated
    with open(path, "w") as f:
        yaml.dump(tree, f)


def _retry_transient(task_, task_run, state) -> bool:
    """Retry crashes and transient failures, never a user error (bad data, bad params)."""
    try:
        state.result()
    except StageFailed as e:
        return not e.user_error
    except Exception:  # noqa: BLE001 - anything else (OOM kill, lost worker) is worth one retry
        return True
    return False


def _dvc() -> str:
    candidate = Path(sys.executable).with_name("dvc")
    return str(candidate) if candidate.exists() else "dvc"


# What dvc prints when another process holds a lock this stage needs: the stage's outputs
# (rwlock: "'artifacts/pretrain/...' is busy, it is being blocked by: (PID n): ...") or the repository.
LOCK_BUSY_MARKS = ("is busy, it is being blocked by", "Unable to acquire lock")


def run_dvc_stage(stage: str, root: str, env: dict[str, str], log=print, grace_seconds: float = 60.0,
                  lock_wait_seconds: float = 300.0, lock_retry_seconds: float = 5.0,
                  pull: bool = False) -> tuple[int, list[str]]:
    """`dvc repro --single-item STAGE`, streaming its output to `log`; (exit status, output lines).
    With `pull`, `dvc repro --pull`: missing inputs and DVC's run cache come from the DVC remote
    (what a worker in its own checkout needs, flows/worker.py).

    dvc and the stage run in their own process group. When this process is being stopped (a
    Prefect cancel raises TerminationSignal here, Ctrl-C KeyboardInterrupt), the whole group gets
    SIGTERM, so the stage saves its checkpoint and exits instead of training on as an orphan:
    signalling dvc alone would leave its child running. SIGKILL after `grace_seconds`.
    When this process is killed outright, nothing can signal the group: the stage watches this
    process itself (bertops.lifeline, named in its environment) and stops the same way.

    A stage whose lock is held by another process (typically the stage of a killed run, still
    saving its checkpoint) is retried every `lock_retry_seconds` for up to `lock_wait_seconds`,
    with a log line, instead of failing at once. (`dvc --wait-for-lock` waits only for the
    repository lock, not for the stage's outputs, and without a limit.)
    """
    import time

    from bertops.lifeline import ORCHESTRATOR_ENV, identity

    env = {**env, ORCHESTRATOR_ENV: identity()}
    deadline = time.monotonic() + lock_wait_seconds
    lines: list[str] = []
    while True:
        code, attempt = _run_dvc_once(stage, root, env, log, grace_seconds, pull)
        lines += attempt
        blocker = _lock_blocker(code, attempt)
        left = deadline - time.monotonic()
        if blocker is None or left <= 0:
            return code, lines
        log(f"bertops: stage {stage!r} waits for DVC's lock, held by {blocker}; "
            f"retrying in {lock_retry_seconds:.0f} s (for up to {left:.0f} s more)")
        time.sleep(min(lock_retry_seconds, left))


def _lock_blocker(code: int, lines: list[str]) -> str | None:
    """Who holds the lock, when dvc failed for a busy lock before running anything; else None."""
    if code == 0 or any(ln.startswith("Running stage") for ln in lines):
        return None
    for i, line in enumerate(lines):
        if any(mark in line for mark in LOCK_BUSY_MARKS):
            holders = [ln.strip() for ln in lines[i + 1:] if ln.strip().startswith("(PID")]
            return "; ".join(holders) or "another DVC process"
    return None


def _run_dvc_once(stage: str, root: str, env: dict[str, str], log, grace_seconds: float,
                  pull: bool = False) -> tuple[int, list[str]]:
    # The venv's bin first, so dvc.yaml's `python -m bertops.stages ...` commands run this install.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    proc = subprocess.Popen([_dvc(), "repro", "--single-item", *(["--pull"] if pull else []), stage], cwd=root,
                            env={**os.environ, **env, "PATH": path}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            log(line.rstrip("\n"))
        return proc.wait(), lines
    except BaseException:
        _stop_group(proc, grace_seconds)
        raise


def _stop_group(proc: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM to the leader's process group, SIGKILL to whatever is left of it after the grace period."""
    import signal
    import time

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            time.sleep(0.2)
            proc.poll()  # reap the leader: a zombie still counts as a group member
            os.killpg(proc.pid, 0)  # ProcessLookupError once every member has exited
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@task(task_run_name="{stage}", retries=1, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def run_stage(stage: str, root: str, env: dict[str, str], pull: bool = False) -> dict:
    code, lines = run_dvc_stage(stage, root, env, log=get_run_logger().info, pull=pull)
    if code != 0:
        raise StageFailed(stage, code, "\n".join(lines[-30:]))
    skipped = any("didn't change, skipping" in ln for ln in lines)
    return {"stage": stage, "skipped": skipped}


def _publish(stage: str, root: Path) -> None:
    """Markdown artifacts people read in the Prefect UI."""
    if stage == "validate":
        path = root / "artifacts/validation/summary.json"
        if path.exists():
            summary = json.loads(path.read_text())
            md = ["# Data validation", "", f"**success:** {summary.get('success')}", "",
                  "```json", json.dumps(summary, indent=2)[:20000], "```"]
            create_markdown_artifact(key="data-validation", markdown="\n".join(md),
                                     description="Data validation summary")
    elif stage == "evaluate":
        path = root / "artifacts/evaluate/report.md"
        if path.exists():
            create_markdown_artifact(key="evaluation", markdown=path.read_text(),
                                     description="Test-split evaluation table")
    elif stage == "register":
        path = root / "artifacts/register/result.json"
        if path.exists():
            r = json.loads(path.read_text())
            md = (f"# Registered `{r.get('model_name')}` v{r.get('version')}\n\n"
                  f"- alias: **{r.get('alias')}**\n- reason: {r.get('reason')}\n")
            create_markdown_artifact(key="registration", markdown=md, description="Registry decision")


@flow(name="bertops-pipeline", log_prints=True)
def pipeline(overrides: dict[str, Any] | None = None, gpu_deployment: str | None = None) -> list[dict]:
    """Run every stage of dvc.yaml; a failed stage fails the flow and nothing after it runs.
    One run per workspace at a time (flows/workspace.py): a second one waits or refuses."""
    from prefect.runtime import flow_run

    from flows.workspace import workspace_lock

    env = {"BERTOPS_FLOW_RUN_ID": str(flow_run.get_id() or "none"),
           "BERTOPS_PIPELINE_RUN": str(flow_run.get_name() or "")}
    results: list[dict] = []
    with workspace_lock(ROOT, {"flow_run": env["BERTOPS_FLOW_RUN_ID"], "name": env["BERTOPS_PIPELINE_RUN"]}):
        apply_overrides(ROOT, overrides or {})
        stages = dvc_stage_order(ROOT)
        with _parent_run(env):
            for stage in stages:
                if gpu_deployment and stage in TRAINING_STAGES:
                    from flows.worker import run_on_worker  # its own checkout; data through the DVC remote

                    results.append(run_on_worker(stage, gpu_deployment, str(ROOT), overrides or {}, env))
                else:
                    results.append(run_stage(stage, str(ROOT), env))
                _publish(stage, ROOT)
    return results


class _parent_run:
    """The MLflow parent run of one pipeline run; children find it through the environment."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.run = None

    def __enter__(self):
        from bertops import tracking

        if not tracking.enabled():
            return self
        mlflow = tracking.configure()
        tracking.end_orphaned_runs()  # runs of a `bertops run` killed outright, still RUNNING: KILLED
        self.run = mlflow.start_run(run_name="pipeline", tags={
            "bertops.stage": "pipeline", "bertops.prefect_flow_run_id": self.env["BERTOPS_FLOW_RUN_ID"],
            **tracking.process_tags()})
        self.env["BERTOPS_PARENT_RUN_ID"] = self.run.info.run_id
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.run is not None:
            import mlflow

            mlflow.end_run(status="FAILED" if exc_type else "FINISHED")
        return False


if __name__ == "__main__":
    pipeline()
