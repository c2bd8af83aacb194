"""prefect.yaml's pull steps choose the worker's own clone when the flow run starts, not when
`prefect deploy` ran: with the former `{{ $BERTOPS_PROJECT_DIR }}` template, `prefect deploy` filled in
the deploying machine's folder and a second worker ran the flow from the first one's clone (found by
helper HT in test_worker_route: worker-2's run imported worker-1's flows/worker.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _pull_steps_as_deployed(deployer_dir: str) -> list[dict]:
    """The pull steps after what `prefect deploy` does to them (env placeholders filled from the
    deploying shell, where BERTOPS_PROJECT_DIR is the deployer's clone)."""
    from prefect.utilities.templating import apply_values

    steps = yaml.safe_load((REPO / "prefect.yaml").read_text())["pull"]
    return apply_values(steps, {**os.environ, "BERTOPS_PROJECT_DIR": deployer_dir}, remove_notset=False)


@pytest.fixture(autouse=True)
def _no_prefect_server():
    """run_steps opens a client for variable and block templates (prefect.yaml's pull steps have none):
    an address nothing listens on keeps it from starting Prefect's temporary server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        yield


def test_each_worker_runs_the_flow_in_its_own_clone(tmp_path, monkeypatch):
    from prefect.deployments.steps.core import run_steps

    deployer, worker = tmp_path / "worker-1", tmp_path / "worker-2"
    deployer.mkdir()
    worker.mkdir()
    steps = _pull_steps_as_deployed(str(deployer))
    assert str(deployer) not in repr(steps)  # nothing of the deploying machine is baked in
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BERTOPS_PROJECT_DIR", str(worker))  # the second worker's environment
    asyncio.run(run_steps(steps))
    assert Path.cwd() == worker


def test_a_worker_without_its_clone_set_fails_the_run_saying_so(tmp_path, monkeypatch):
    from prefect.deployments.steps.core import StepExecutionError, run_steps

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BERTOPS_PROJECT_DIR", raising=False)
    with pytest.raises(StepExecutionError) as err:
        asyncio.run(run_steps(_pull_steps_as_deployed("/somewhere/else")))
    assert "set BERTOPS_PROJECT_DIR on this worker" in str(err.value.__cause__ or err.value)
    assert Path.cwd() == tmp_path
