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


FAKE_SERVER = '''
import http.server, os, subprocess, sys, time
port, delay, pidfile = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # as uvicorn under mlflow
open(pidfile, "w").write(str(child.pid))
if delay < 0:
    sys.exit(3)
time.sleep(delay)  # not answering yet

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get("FAKE_VAR", "").encode() if self.path == "/env" else b"pong"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is gone too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pid: int, seconds: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def test_scoring_server_waits_for_ping_and_stops_its_whole_process_group(tmp_path, monkeypatch):
    """bertops.cli.scoring_server (bench/serving.py and the serving tests start servers with it): it
    yields once /ping answers, with the extra environment, and on exit stops the server and the
    processes it started; a server that exits first is named."""
    import urllib.request

    script, pidfile = tmp_path / "server.py", tmp_path / "child.pid"
    script.write_text(FAKE_SERVER)
    timing = {"delay": 1.0}  # the server answers 1 s after it starts

    def fake_serve_command(args):
        return ([sys.executable, str(script), str(args.port), str(timing["delay"]), str(pidfile)],
                dict(os.environ))

    monkeypatch.setattr(cli, "serve_command", fake_serve_command)
    with cli.scoring_server("models:/m@champion", env={"FAKE_VAR": "set"}, timeout=60) as (url, proc):
        with urllib.request.urlopen(url + "/ping", timeout=5) as r:  # answers at once: not yielded early
            assert r.status == 200
        with urllib.request.urlopen(url + "/env", timeout=5) as r:
            assert r.read() == b"set"
        child = int(pidfile.read_text())
        assert _alive(child)
    assert proc.poll() is not None and _gone(child)  # the server and the process it started

    timing["delay"] = -1  # exits with 3 before answering
    with pytest.raises(cli.BertopsError, match="models:/m@champion exited with 3"):
        with cli.scoring_server("models:/m@champion", timeout=60):
            pass
    assert _gone(int(pidfile.read_text()))
