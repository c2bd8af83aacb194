"""`bertops champion-diff` against a real MLflow store (SQLite, created here; no mocks): no champion
yet, a champion registered by a pipeline run (gate tag, lineage tags, its evaluate run under the same
parent), a better and a worse workspace, and the errors (no gate metric, an unreachable server).
The same command against the stack's MLflow server with basic auth: tests/integration/test_stack.py."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import yaml

from bertops.cli import main

REPO = Path(__file__).resolve().parents[2]
LOCK = {"schema": "2.0", "stages": {
    "pretrain": {"cmd": "x", "outs": [{"path": "artifacts/pretrain/model", "md5": "aaa.dir"}]},
    "finetune": {"cmd": "x", "outs": [{"path": "artifacts/finetune/model", "md5": "bbb.dir"}]}}}


def _workspace(root: Path, gate: float, test_score: float) -> Path:
    """A project folder as the pipeline leaves it before `register`: params.yaml, the gate metric
    file, the evaluate headline, dvc.lock and data.dvc."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "artifacts/finetune").mkdir(parents=True, exist_ok=True)
    (root / "artifacts/finetune/metrics.json").write_text(json.dumps({"gate": {"score": gate}}))
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/evaluate.json").write_text(json.dumps({"test_score": test_score}))
    (root / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    (root / "data.dvc").write_text(yaml.safe_dump({"outs": [{"md5": "data-new.dir", "path": "data"}]}))
    return root


def _diff(root: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["champion-diff", "--params", str(root / "params.yaml"), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def _register_champion(uri: str, root: Path, gate: float, test_score: float) -> str:
    """What a pipeline run leaves in the registry: a parent run, its evaluate run (mean_score) and
    register run, a model version of that run with lineage tags, the gate applied (alias champion)."""
    import mlflow

    from bertops.config import load_params_dict
    from bertops.tracking import registry

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("bertops")
    exp_id = exp.experiment_id if exp else client.create_experiment("bertops")
    parent = client.create_run(exp_id, tags={"bertops.stage": "pipeline"}).info.run_id
    evaluate = client.create_run(exp_id, tags={"bertops.stage": "evaluate", "mlflow.parentRunId": parent})
    client.log_metric(evaluate.info.run_id, "mean_score", test_score)
    register = client.create_run(exp_id, tags={"bertops.stage": "register", "mlflow.parentRunId": parent})
    tags = registry.lineage_tags(root, load_params_dict(root / "params.yaml"), validation_ok=True)
    tags["bertops.data_md5"] = "data-old.dir"  # the champion saw other data
    if not client.search_registered_models(filter_string="name = 'bertops'"):
        client.create_registered_model("bertops")
    version = client.create_model_version("bertops", f"runs:/{register.info.run_id}/model",
                                          run_id=register.info.run_id, tags=tags).version
    registry.apply_gate(client, "bertops", version, gate, threshold=0.0)
    return str(version)


def test_champion_diff_against_a_real_registry(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    new = _workspace(tmp_path / "ci", gate=0.5, test_score=0.45)

    # no registered model yet: said so, exit 0, the model would be the first champion
    code, out, err = _diff(new, capsys, "--json", str(tmp_path / "none.json"))
    assert code == 0, err
    assert "**No champion yet**: no registered model 'bertops'" in out
    assert "**Gate if registered:** champion (first model: no champion yet" in out
    assert json.loads((tmp_path / "none.json").read_text())["champion_version"] is None

    version = _register_champion(uri, _workspace(tmp_path / "old", 0.42, 0.40), gate=0.42, test_score=0.40)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    code, out, err = _diff(new, capsys, "--markdown", str(summary), "--json", str(tmp_path / "diff.json"))
    assert code == 0, err
    assert f"| metric | this run | champion (version {version}) | difference |" in out
    assert "| gate.score (the gate) | 0.5000 | 0.4200 | +0.0800 |" in out
    assert "| test_score (evaluate) | 0.4500 | 0.4000 | +0.0500 |" in out  # the champion's evaluate run
    assert "**Gate if registered:** champion (gate value 0.5000 beats champion 0.4200" in out
    assert "| data_md5 | `data-new.dir` | `data-old.dir` | **changed** |" in out
    assert any(line.startswith("| stage.pretrain |") and line.endswith("| same |") for line in out.splitlines())
    assert summary.read_text() == "earlier step\n" + out  # appended, as to $GITHUB_STEP_SUMMARY
    saved = json.loads((tmp_path / "diff.json").read_text())
    assert (saved["champion_version"], saved["champion_gate"], saved["decision"]) == (version, 0.42, "champion")

    worse = _workspace(tmp_path / "worse", gate=0.3, test_score=0.2)
    code, out, _ = _diff(worse, capsys)
    assert code == 0  # a worse model is a result, not an error
    assert "| gate.score (the gate) | 0.3000 | 0.4200 | -0.1200 |" in out
    assert "**Gate if registered:** challenger (gate value 0.3000 does not beat champion 0.4200" in out


def test_champion_diff_errors_exit_non_zero_with_a_message(tmp_path, capsys, monkeypatch):
    root = _workspace(tmp_path / "ws", gate=0.5, test_score=0.4)
    (root / "artifacts/finetune/metrics.json").unlink()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, _, err = _diff(root, capsys)
    assert code == 2 and "metrics.json is missing: train and evaluate first" in err, err

    _workspace(root, gate=0.5, test_score=0.4)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ci:s3cret@127.0.0.1:{port}")  # a password in the URI
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    code, out, err = _diff(root, capsys)
    assert code == 2 and f"http://ci:***@127.0.0.1:{port}" in err and "champion-diff:" in err, (out, err)
    assert not out and "s3cret" not in err  # never printed (the table goes to CI summaries)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
