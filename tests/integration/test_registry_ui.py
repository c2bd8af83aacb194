"""The MLflow registry UI, in a real headless Chromium, shows which version is the champion."""

import os
import subprocess

import pytest

from bertops.tracking import registry
from tests.helpers import dump_dom, free_port, venv_bin, wait_http

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def registry_server(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_registered_model("bertops")
    for n, value in ((1, 0.6), (2, 0.4)):  # v1 champion; v2 worse, so challenger
        (tmp_path / f"m{n}").mkdir()
        version = client.create_model_version("bertops", str(tmp_path / f"m{n}")).version
        registry.apply_gate(client, "bertops", version, value, threshold=0.0)
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([venv_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", uri],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ui_shows_champion_on_the_right_version(registry_server, tmp_path):
    v1 = dump_dom(f"{registry_server}/#/models/bertops/versions/1", tmp_path / "chrome1")
    v2 = dump_dom(f"{registry_server}/#/models/bertops/versions/2", tmp_path / "chrome2")
    # The alias tag MLflow renders on a version page is "@ alias" (a non-breaking space between).
    assert "Version 1" in v1 and "@&nbsp;champion" in v1
    assert "Version 2" in v2 and "@&nbsp;challenger" in v2 and "@&nbsp;champion" not in v2
