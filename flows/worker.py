"""Training stages on workers that have their own checkout; inputs and outputs travel through DVC.

    orchestrator (pipeline flow, its workspace)          worker (`prefect worker start --pool gpu`, own clone)
      dvc push --run-cache   (upstream outputs, data)
      run_deployment("bertops-stage/gpu", stage,  ───►   git fetch REPO_URL; git checkout COMMIT
        commit, overrides, dvc.lock, env)                the run's overrides into params.yaml (apply_overrides)
                                                         the run's dvc.lock; dvc repro --pull --single-item STAGE
                                                         dvc push --run-cache (+ the run cache's metrics files)
      dvc repro --pull --single-item STAGE   ◄───        (MLflow: child of the pipeline's parent run)
        restored from DVC's run cache: dvc.lock updated, `dvc status` clean, nothing trained twice

Nothing is copied by hand: the worker gets the stage's inputs with `dvc repro --pull`, and the
orchestrator gets the outputs from DVC's run cache (cmd + deps + params of the worker's run), so its
dvc.lock ends as after a local run and a second run skips every stage. The orchestrator's
`dvc repro` runs under BERTOPS_RESTORE_ONLY: should the run cache miss (this workspace differs from
the commit the worker checked out), the stage fails with a message instead of training here.

The worker needs: a clone of the repository with its .venv (`make install`), BERTOPS_PROJECT_DIR
(that clone; prefect.yaml's pull step runs the flow there), BERTOPS_REPO_URL (where to fetch the
orchestrator's commit; default: the clone's `origin`), the DVC remote with its credentials
(`.dvc/config.local`), and MLFLOW_TRACKING_URI (+ MLFLOW_TRACKING_USERNAME/PASSWORD) of the server.
With BERTOPS_CHECKPOINT_STORE (stack.env: s3://checkpoints/bertops, with AWS_ENDPOINT_URL_S3 and the
keys) the pretrain stage also keeps its checkpoints in the object store, so a stage whose worker died
resumes on whichever worker reruns it (bertops.train.checkpointing.fetch_stored_checkpoint).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from bertops.stages.__main__ import RESTORE_ONLY_ENV  # the stage refuses to run (see the docstring)
from bertops.tracking.registry import PIPELINE_OUTPUTS
from flows.pipeline import StageFailed, _dvc, apply_overrides, run_dvc_stage, run_stage

# Files a pipeline run itself changes in the orchestrator's workspace (its outputs, and params.yaml
# for the overrides); anything else uncommitted would not reach the worker, which checks out the commit.
RUN_FILES = ("params.yaml", *PIPELINE_OUTPUTS)


class WorkerRouteError(RuntimeError):
    pass


def _git(root: str | Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WorkerRouteError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip()}")
    return proc.stdout


def _dvc_cmd(root: str | Path, *args: str, log=print) -> str:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    proc = subprocess.run([_dvc(), *args], cwd=root, capture_output=True, text=True, env=env)
    out = (proc.stdout + proc.stderr).strip()
    if out:
        log(f"dvc {' '.join(args)}: {out[-2000:]}")
    if proc.returncode != 0:
        raise WorkerRouteError(f"dvc {' '.join(args)} failed in {root} ({proc.returncode}):\n{out[-3000:]}")
    return out


# ---- the orchestrator's side --------------------------------------------------------------------

def dispatch_commit(root: str | Path, overrides: dict[str, Any]) -> str:
    """The commit a worker checks out: HEAD, provided the workspace holds nothing else a worker
    would miss (tracked files other than RUN_FILES changed; params.yaml other than the overrides)."""
    import yaml

    from bertops.config import apply_override

    commit = _git(root, "rev-parse", "HEAD").strip()
    dirty = [line[3:] for line in _git(root, "status", "--porcelain", "--untracked-files=no").splitlines()]
    dirty = [path for path in dirty if not path.startswith(RUN_FILES)]
    if dirty:
        raise WorkerRouteError(f"the worker checks out commit {commit[:12]}, but these changes are not "
                               f"committed: {', '.join(dirty)}; commit (and push) them first")
    committed = yaml.safe_load(_git(root, "show", f"{commit}:params.yaml"))
    for dotted, value in overrides.items():
        apply_override(committed, dotted, value)
    if committed != yaml.safe_load((Path(root) / "params.yaml").read_text()):
        raise WorkerRouteError(f"params.yaml differs from commit {commit[:12]} by more than this run's overrides "
                               f"{sorted(overrides)}: commit the other changes, or pass them as overrides")
    return commit


def push_with_run_cache(root: str | Path, log=print) -> None:
    """`dvc push --run-cache`, plus the objects of the run-cache entries themselves: the outputs a
    stage declares `cache: false` (metrics/NAME.json) are saved into the run cache by DVC but not
    pushed by `dvc push`, and without them the other side cannot restore the stage."""
    _dvc_cmd(root, "push", "--run-cache", log=log)
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        entries = repo.stage_cache.push(None)
        objs = {obj for group in repo.stage_cache.get_used_objs(entries).values() for obj in group}
        result = repo.cloud.push(objs)
    log(f"run cache: {len(entries)} entries, {len(result.transferred)} objects pushed")


def stage_is_current(root: str | Path, stage: str) -> bool:
    """True when `dvc status STAGE` has nothing to say (the stage would be skipped)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return not repo.status(targets=[stage])


@task(task_run_name="{stage} (worker)")
def run_on_worker(stage: str, deployment: str, root: str, overrides: dict[str, Any], env: dict[str, str]) -> dict:
    """Run `stage` on the work pool behind `deployment`, then restore it here from DVC's run cache.
    A stage that is up to date is skipped here, as `dvc repro` would (nothing is sent)."""
    from prefect.deployments import run_deployment

    log = get_run_logger().info
    if stage_is_current(root, stage):
        return run_stage.fn(stage, root, env)  # prints DVC's "didn't change, skipping"
    commit = dispatch_commit(root, overrides)
    push_with_run_cache(root, log=log)  # the stage's inputs (upstream outputs, data) for the worker
    lock = Path(root, "dvc.lock")
    # poll_interval: Prefect's default, 5 s, left the pipeline idle up to 5 s after each stage
    fr = run_deployment(deployment, timeout=None, poll_interval=1, parameters={
        "stage": stage, "commit": commit, "overrides": overrides, "env": env,
        "lock": lock.read_text() if lock.exists() else None})
    if fr.state is None or not fr.state.is_completed():  # Failed, Crashed, Cancelled: fail this run
        state = f"{fr.state.name}: {fr.state.message}" if fr.state else "without a state"
        raise WorkerRouteError(f"stage {stage!r} on {deployment} (flow run {fr.id}) ended {state}")
    code, lines = run_dvc_stage(stage, root, {**env, RESTORE_ONLY_ENV: stage}, log=log, pull=True)
    if code != 0:
        raise StageFailed(stage, code, "\n".join(lines[-30:]))
    if not any("is cached - skipping run" in ln for ln in lines):
        raise WorkerRouteError(f"stage {stage!r} was not restored from DVC's run cache:\n" + "\n".join(lines[-30:]))
    return {"stage": stage, "flow_run": str(fr.id), "commit": commit, "restored": True}


# ---- the worker's side --------------------------------------------------------------------------

def worker_root() -> Path:
    return Path(os.environ.get("BERTOPS_PROJECT_DIR") or Path.cwd()).resolve()


def checkout(root: Path, commit: str, repo_url: str | None) -> None:
    """Make the worker's clone the orchestrator's commit (tracked files only; outputs stay DVC's)."""
    source = repo_url or "origin"
    _git(root, "fetch", "--quiet", source, "+refs/heads/*:refs/remotes/bertops-orchestrator/*")
    try:
        _git(root, "checkout", "--quiet", "--force", "--detach", commit)
    except WorkerRouteError as e:
        raise WorkerRouteError(f"commit {commit} is not in {source}: push it there first ({e})") from None


@flow(name="bertops-stage", log_prints=True)
def stage_flow(stage: str, commit: str | None = None, overrides: dict[str, Any] | None = None,
               lock: str | None = None, env: dict[str, str] | None = None, repo_url: str | None = None) -> dict:
    """One training stage in this worker's own checkout (see the module docstring); a failure fails
    this flow run, and so the pipeline that started it."""
    root = worker_root()
    if commit:
        checkout(root, commit, repo_url or os.environ.get("BERTOPS_REPO_URL"))
    apply_overrides(root, overrides or {})
    if lock is not None:  # the run's upstream outputs, as the orchestrator's workspace has them
        (root / "dvc.lock").write_text(lock)
    result = run_stage(stage, str(root), env or {}, pull=True)
    push_with_run_cache(root, log=get_run_logger().info)
    return {**result, "commit": commit, "worker_dir": str(root)}
