"""MLflow tracking for stage entry points (never imported by core training code).

Every stage runs inside `stage_run(name, params)`: an MLflow run in experiment `bertops`, a child of
the pipeline's parent run when `BERTOPS_PARENT_RUN_ID` is set (the Prefect flow sets it).
Tracking goes to `MLFLOW_TRACKING_URI`, or `sqlite:///mlflow.db` in the working directory;
`BERTOPS_TRACKING=off` turns it off (then only local CSV/JSON outputs are written).

Every run is tagged with the process that owns it (PROCESS_TAG, bertops.lifeline.identity()); a run
whose process was killed outright stays RUNNING in MLflow, so the next pipeline or stage run marks
such runs KILLED (`end_orphaned_runs`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT = "bertops"
PROCESS_TAG = "bertops.process"  # host:pid:start-time of the process that owns the run


def enabled() -> bool:
    return os.environ.get("BERTOPS_TRACKING", "on").lower() not in {"off", "0", "false", "no"}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def configure():
    """Point MLflow at the project's store and experiment; returns the mlflow module."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment_id=_experiment_id(mlflow, os.environ.get("BERTOPS_EXPERIMENT", EXPERIMENT)))
    return mlflow


def _experiment_id(mlflow, name: str) -> str:
    """The experiment's id, creating it if needed. Not `mlflow.set_experiment(name)`: when several
    processes create a new experiment at once (workers, concurrent runs on a fresh server), MLflow
    3.17's losers of the race return early without making it active, so their runs land silently
    in experiment 0 (mlflow/mlflow#12259)."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created by another process in between
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def process_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run (see end_orphaned_runs)."""
    from bertops.lifeline import identity

    return {PROCESS_TAG: identity()}


def end_orphaned_runs() -> list[str]:
    """Mark KILLED every RUNNING run of the experiment whose owning process is gone (a `bertops run`
    or a stage killed with SIGKILL, by the OOM killer, by a lost machine); returns their run ids.
    Runs without the tag, and runs of another host (whose processes cannot be seen), are left alone."""
    if not enabled():
        return []
    from bertops.lifeline import identity, is_alive

    mlflow = configure()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(os.environ.get("BERTOPS_EXPERIMENT", EXPERIMENT))
    if experiment is None:
        return []
    ended = []
    for run in client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000):
        owner = run.data.tags.get(PROCESS_TAG)
        if owner and is_alive(owner) is False:
            client.set_tag(run.info.run_id, "bertops.ended_by", f"{identity()}: its process {owner} is gone")
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    if ended:
        log.warning("MLflow: marked KILLED %d run(s) left RUNNING by a killed process: %s", len(ended),
                    ", ".join(ended))
    return ended


@contextmanager
def stage_run(stage: str, params: dict | None = None) -> Iterator[Any]:
    """Open the MLflow run for one stage; yields the run, or None when tracking is off."""
    if not enabled():
        yield None
        return
    mlflow = configure()
    end_orphaned_runs()
    parent = os.environ.get("BERTOPS_PARENT_RUN_ID")
    tags = {"bertops.stage": stage, **process_tags()}
    if os.environ.get("BERTOPS_PIPELINE_RUN"):
        tags["bertops.pipeline_run"] = os.environ["BERTOPS_PIPELINE_RUN"]
    with mlflow.start_run(run_name=stage, parent_run_id=parent, nested=parent is not None, tags=tags) as run:
        if params:
            flat = {k: str(v)[:500] for k, v in _flatten(params).items()}
            mlflow.log_params(flat)
        yield run


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics (nested dicts flattened with dots) to the active run, if any."""
    if not enabled():
        return
    import mlflow

    if mlflow.active_run() is None:
        return
    flat = {k.replace("/", "."): float(v) for k, v in _flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics(flat, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file or a directory to the active run, if any."""
    if not enabled():
        return
    import mlflow

    if mlflow.active_run() is None:
        return
    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    elif path.exists():
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def lightning_loggers(out_dir: str | Path) -> list:
    """Loggers for a Lightning Trainer: always a CSV log in out_dir, plus the active MLflow run."""
    from lightning.pytorch.loggers import CSVLogger

    loggers: list = [CSVLogger(str(out_dir), name="logs", version="")]
    if enabled():
        import mlflow
        from lightning.pytorch.loggers import MLFlowLogger

        run = mlflow.active_run()
        if run is not None:
            loggers.append(MLFlowLogger(tracking_uri=tracking_uri(), run_id=run.info.run_id,
                                        experiment_name=os.environ.get("BERTOPS_EXPERIMENT", EXPERIMENT)))
    return loggers
