"""The stage launcher, `python -m bertops.stages NAME` (what dvc.yaml runs; `bertops stage NAME` is the
same): it runs a stage without the rest of the CLI, and tasks are checked where they are used
(bertops.config_tasks), not when parameters load, so tokenize and pretrain depend on neither the CLI
nor the task types. A wrong task is still refused before any work, with a message naming it, by
`bertops stage`, the launcher, `bertops run` and `bertops data fetch`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bertops import cli
from bertops.stages.__main__ import STAGES
from tests.helpers import fake_flow_project

REPO = Path(__file__).resolve().parents[2]
BAD_TASK = "tasks:\n  t:\n    type: text_regression\n    path: x\n    text_fields: [text]\n"
BAD_TASK_MESSAGE = "bertops: error: tasks.t.type: unknown task type 'text_regression'; known: "


def _launcher(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BERTOPS_ORCHESTRATOR"}
    return subprocess.run([sys.executable, "-m", "bertops.stages", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**env, "BERTOPS_TRACKING": "off"})


def test_dvc_yaml_runs_every_stage_through_the_launcher():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert {name: spec["cmd"] for name, spec in stages.items()} == {
        name: f"python -m bertops.stages {name}" for name in STAGES}
    stage_parser = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["stage"]._actions
                        if a.dest == "name")
    assert tuple(stage_parser.choices) == STAGES  # `bertops stage` offers the same stages


def test_the_launcher_refuses_a_wrong_task_before_any_work(tmp_path):
    (tmp_path / "params.yaml").write_text(BAD_TASK)
    out = _launcher("validate", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith(BAD_TASK_MESSAGE) and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no output, no headline
    out = _launcher("validate", "-S", "seed=x", cwd=tmp_path)  # parameters that do not fit the config
    assert out.returncode == 2 and out.stderr.startswith("bertops: error: params.yaml: 1 validation error")
    out = _launcher("nope", cwd=tmp_path)
    assert out.returncode == 2 and "invalid choice: 'nope'" in out.stderr


def test_loading_parameters_for_a_stage_imports_neither_the_cli_nor_the_task_types():
    # the runtime side of tests/unit/test_dvc_deps.py's static walk: what tokenize and pretrain run
    script = ("import sys; import bertops.stages.__main__; from bertops.config import load_params; "
              "import bertops.stages.tokenize, bertops.stages.pretrain; "
              "import bertops.stages.headline.tokenize, bertops.stages.headline.pretrain; "
              "assert load_params('params.yaml').tasks; "
              "print(sorted(m for m in sys.modules if m in ('bertops.cli', 'bertops.config_tasks') "
              "or m.startswith('bertops.model.multitask') or m == 'bertops.stages.headline.finetune'))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.fixture
def recording_project(tmp_path, monkeypatch):
    """A bertops project with a bad task whose flow only records that it ran."""
    flow = ("import os\nfrom pathlib import Path\n\nclass StageFailed(RuntimeError):\n    pass\n\n"
            "def pipeline(overrides=None):\n    Path(os.environ['FAKE_FLOW_RECORD']).write_text('ran')\n")
    record = tmp_path / "record"
    monkeypatch.setenv("FAKE_FLOW_RECORD", str(record))
    with fake_flow_project(tmp_path / "project", monkeypatch, flow, BAD_TASK) as root:
        monkeypatch.chdir(root)
        yield root, record


def test_run_refuses_a_wrong_task_before_any_stage(recording_project, capsys):
    root, record = recording_project
    assert cli.main(["run"]) == 2
    assert capsys.readouterr().err.startswith(BAD_TASK_MESSAGE)
    assert not record.exists()  # the flow never started
    # a -S override that breaks a good task is refused the same way
    (root / "params.yaml").write_text("tasks:\n  t:\n    type: pair_classification\n    path: x\n"
                                      "    text_fields: [a, b]\n    labels: [no, yes]\n")
    assert cli.main(["run", "-S", "tasks.t.text_fields=[a]"]) == 2
    assert capsys.readouterr().err == "bertops: error: tasks.t: pair_classification needs exactly 2 text_fields\n"
    assert not record.exists()
    assert cli.main(["run"]) == 0 and record.read_text() == "ran"


def test_data_fetch_refuses_a_wrong_task(tmp_path, monkeypatch, capsys):
    from bertops.data import fetch

    monkeypatch.setattr(fetch, "main", lambda *a, **k: pytest.fail("fetched with a wrong task"))
    (tmp_path / "params.yaml").write_text(BAD_TASK)
    assert cli.main(["data", "fetch", "--params", str(tmp_path / "params.yaml")]) == 2
    assert capsys.readouterr().err.startswith(BAD_TASK_MESSAGE)


def test_the_flow_refuses_an_override_that_breaks_a_task(tmp_path):
    flow = pytest.importorskip("flows.pipeline")
    from bertops.errors import BertopsError

    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    with pytest.raises(BertopsError, match=r"tasks\.wic: pair_classification needs exactly 2 text_fields"):
        flow.apply_overrides(tmp_path, {"tasks.wic.text_fields": ["sentence1"]})
    assert (tmp_path / "params.yaml").read_text() == (REPO / "params.yaml").read_text()  # nothing written
