"""tracking.end_orphaned_runs: RUNNING runs whose process is gone are marked KILLED, no others."""

from __future__ import annotations

import subprocess
import sys

from bertops import lifeline, tracking


def test_only_runs_of_dead_processes_of_this_host_are_ended(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTOPS_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BERTOPS_EXPERIMENT", "orphans")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owners = {"dead": lifeline.identity(dead.pid), "alive": lifeline.identity(),
              "elsewhere": f"another-host.invalid:{dead.pid}:1", "untagged": None}
    client = tracking.configure().MlflowClient()
    experiment = client.get_experiment_by_name("orphans").experiment_id
    ids = {}
    for name, owner in owners.items():
        tags = {tracking.PROCESS_TAG: owner} if owner else {}
        ids[name] = client.create_run(experiment, tags=tags, run_name=name).info.run_id
    finished = client.create_run(experiment, tags={tracking.PROCESS_TAG: owners["dead"]}).info.run_id
    client.set_terminated(finished, status="FINISHED")

    assert tracking.end_orphaned_runs() == [ids["dead"]]
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"dead": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING", "untagged": "RUNNING"}
    assert client.get_run(finished).info.status == "FINISHED"
    assert client.get_run(ids["dead"]).info.end_time is not None
    assert tracking.end_orphaned_runs() == []
