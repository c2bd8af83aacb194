"""The `bertops` command line: where `bertops run` runs, which parameters it takes, and the
environment `bertops serve` gives the MLflow scoring server. No pipeline is run here: `run` is
pointed at a fake project whose flow only records how it was called."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bertops import cli
from tests.helpers import fake_flow_project

REPO_ROOT = Path(__file__).resolve().parents[2]

FAKE_FLOW = '''
import json, os
from pathlib import Path

class StageFailed(RuntimeError):
    def __init__(self, stage):
        self.stage = stage

def pipeline(overrides=None):
    Path(os.environ["FAKE_FLOW_RECORD"]).write_text(json.dumps({"cwd": os.getcwd(), "overrides": overrides,
                                                                "module": __file__}))
    return []
'''


@pytest.fixture
def fake_project(tmp_path, monkeypatch):
    """A directory that looks like a bertops project; its flows.pipeline records its call."""
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_FLOW_RECORD", str(record))
    with fake_flow_project(tmp_path / "project", monkeypatch, FAKE_FLOW, "seed: 1\n") as root:
        (root / "src" / "deep" / "er").mkdir(parents=True)
        yield root, record


def test_project_root_is_found_from_a_subdirectory():
    assert cli.find_project_root(REPO_ROOT / "src" / "bertops") == REPO_ROOT
    assert cli.find_project_root(REPO_ROOT) == REPO_ROOT


def test_run_outside_any_project_says_where_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run"]) == 2  # was: ModuleNotFoundError: No module named 'flows'
    assert cli.find_project_root() is None
    err = capsys.readouterr().err
    assert "bertops: error:" in err and "dvc.yaml" in err and str(tmp_path) in err
    # this checkout is an editable install, so the message names it as the place to run
    assert f"Run it in {REPO_ROOT}" in err


def test_run_from_a_subdirectory_runs_the_project_flow_at_its_root(fake_project, monkeypatch):
    root, record = fake_project
    monkeypatch.chdir(root / "src" / "deep" / "er")
    assert cli.main(["run", "-S", "pretrain.max_steps=5"]) == 0
    import json

    seen = json.loads(record.read_text())
    assert Path(seen["cwd"]) == root.resolve()
    assert Path(seen["module"]).resolve() == (root / "flows" / "pipeline.py").resolve()
    assert seen["overrides"] == {"pretrain.max_steps": 5}


def test_run_refuses_another_params_file(fake_project, monkeypatch, capsys):
    root, record = fake_project
    other = root / "src" / "other.yaml"
    other.write_text("seed: 2\n")
    monkeypatch.chdir(root / "src")
    assert cli.main(["run", "--params", "other.yaml"]) == 2
    err = capsys.readouterr().err
    assert "--params other.yaml" in err and str(root.resolve() / "params.yaml") in err and "-S KEY=VALUE" in err
    assert not record.exists()  # nothing ran
    # the project's own params.yaml, named explicitly, is fine
    assert cli.main(["run", "--params", "../params.yaml"]) == 0
    assert record.exists()


def test_serve_finds_uvicorn_without_an_activated_venv(monkeypatch, tmp_path):
    # `mlflow models serve` starts `uvicorn` from PATH: with the venv's bin not on PATH (no
    # `source .venv/bin/activate`) it died with "return code 127".
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "uvicorn").exists():
        pytest.skip("uvicorn is not installed beside this interpreter")
    stripped = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                               if p and Path(p).resolve() != bin_dir.resolve())
    monkeypatch.setenv("PATH", stripped)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert shutil.which("uvicorn") is None or Path(shutil.which("uvicorn")).parent.resolve() != bin_dir.resolve()
    calls = []

    def fake_exec(path, argv, env=None):
        calls.append((path, argv, dict(os.environ) if env is None else env))
        raise SystemExit(0)

    for name in ("execv", "execve", "execvp", "execvpe"):
        monkeypatch.setattr(os, name, fake_exec)
    with pytest.raises(SystemExit):
        cli.main(["serve", "--port", "5999"])
    (path, argv, env), = calls
    assert argv[1:4] == ["models", "serve", "-m"] and "5999" in argv
    uvicorn = shutil.which("uvicorn", path=env["PATH"])
    assert uvicorn is not None and Path(uvicorn).parent == bin_dir
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    # the server itself is this venv's mlflow, whatever PATH says
    assert Path(argv[0]).parent == bin_dir and Path(path).name == "mlflow"


def test_serve_command_keeps_the_callers_tracking_uri(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////somewhere/mlflow.db")
    cmd, env = cli.serve_command(SimpleNamespace(model_uri="models:/m@champion", host="127.0.0.1", port=1))
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////somewhere/mlflow.db"
    assert cmd[cmd.index("-m") + 1] == "models:/m@champion"
