"""The promotion gate against a real MLflow registry (SQLite), and the lineage tags."""

import json

import pytest

from bertops.tracking import registry


@pytest.fixture
def client(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    c = mlflow.MlflowClient(tracking_uri=uri)
    c.create_registered_model("m")
    return c


def _new_version(client, tmp_path, n):
    src = tmp_path / f"model{n}"
    src.mkdir()
    return client.create_model_version("m", str(src)).version


def test_first_model_becomes_champion(client, tmp_path):
    v1 = _new_version(client, tmp_path, 1)
    gate = registry.apply_gate(client, "m", v1, 0.5, threshold=0.0)
    assert gate["alias"] == "champion"
    assert client.get_model_version_by_alias("m", "champion").version == v1


def test_worse_model_is_never_promoted(client, tmp_path):
    v1 = _new_version(client, tmp_path, 1)
    registry.apply_gate(client, "m", v1, 0.5, threshold=0.0)
    v2 = _new_version(client, tmp_path, 2)
    gate = registry.apply_gate(client, "m", v2, 0.4, threshold=0.0)
    assert gate["alias"] == "challenger"
    assert client.get_model_version_by_alias("m", "champion").version == v1
    assert client.get_model_version_by_alias("m", "challenger").version == v2
    tags = client.get_model_version("m", v2).tags
    assert "does not beat champion 0.5000" in tags["bertops.gate_reason"]


def test_better_by_less_than_threshold_is_not_promoted(client, tmp_path):
    v1 = _new_version(client, tmp_path, 1)
    registry.apply_gate(client, "m", v1, 0.5, threshold=0.05)
    v2 = _new_version(client, tmp_path, 2)
    assert registry.apply_gate(client, "m", v2, 0.53, threshold=0.05)["alias"] == "challenger"
    v3 = _new_version(client, tmp_path, 3)
    assert registry.apply_gate(client, "m", v3, 0.56, threshold=0.05)["alias"] == "champion"
    assert client.get_model_version_by_alias("m", "champion").version == v3


@pytest.mark.parametrize("value", [0.5, 0.4583334, 2 / 3])
def test_model_equal_to_the_champion_is_not_promoted_at_threshold_zero(client, tmp_path, value):
    # the same model registered again (e.g. a rerun): its gate value equals the champion's, so it
    # must not take the alias; 0.4583334 also checks the comparison is not won by a rounding digit
    # of the stored tag (0.458333)
    v1 = _new_version(client, tmp_path, 1)
    registry.apply_gate(client, "m", v1, value, threshold=0.0)
    v2 = _new_version(client, tmp_path, 2)
    gate = registry.apply_gate(client, "m", v2, value, threshold=0.0)
    assert gate["alias"] == "challenger" and gate["previous_champion"] == v1
    assert client.get_model_version_by_alias("m", "champion").version == v1
    assert registry.decide_promotion(value, value, 0.0)[0] == "challenger"
    # and just better (by more than the stored precision) is promoted
    v3 = _new_version(client, tmp_path, 3)
    assert registry.apply_gate(client, "m", v3, value + 2e-6, threshold=0.0)["alias"] == "champion"


def test_get_dotted_reads_mean_of_seed_metrics():
    metrics = {"mean_score": 0.7, "pretrained": {"sentiment": {"accuracy": {"mean": 0.8, "std": 0.01}}}}
    assert registry.get_dotted(metrics, "mean_score") == 0.7
    assert registry.get_dotted(metrics, "pretrained.sentiment.accuracy") == 0.8
    with pytest.raises(KeyError):
        registry.get_dotted(metrics, "pretrained.topic.accuracy")


def test_lineage_tags_read_dvc_files(tmp_path):
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc123.dir\n  path: data\n")
    (tmp_path / "dvc.lock").write_text(json.dumps({"schema": "2.0", "stages": {
        "pretrain": {"cmd": "x", "outs": [{"path": "artifacts/pretrain/model", "md5": "f00.dir"}]}}}))
    tags = registry.lineage_tags(tmp_path, {"seed": 1}, validation_ok=True)
    assert tags["bertops.data_md5"] == "abc123.dir"
    assert tags["bertops.validation"] == "passed"
    assert len(tags["bertops.stage.pretrain"]) == 12
    assert tags["bertops.params_hash"] == registry.params_hash({"seed": 1})
    assert tags["bertops.params_hash"] != registry.params_hash({"seed": 2})


def test_git_commit_is_dirty_for_code_changes_not_for_the_pipelines_own_outputs(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "src").mkdir()
    for name in ("dvc.lock", "metrics/evaluate.json", "params.yaml", "src/code.py"):
        (tmp_path / name).write_text("0\n")
    git("add", ".")
    git("commit", "-q", "-m", "x")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert registry._git_commit(tmp_path) == sha
    # what every run rewrites: not a change to the code that ran (asked from a subfolder too)
    (tmp_path / "dvc.lock").write_text("1\n")
    (tmp_path / "metrics/evaluate.json").write_text("1\n")
    assert registry._git_commit(tmp_path) == sha
    assert registry._git_commit(tmp_path / "src") == sha
    (tmp_path / "params.yaml").write_text("1\n")
    assert registry._git_commit(tmp_path) == sha + "-dirty"
    git("checkout", "--", "params.yaml")
    (tmp_path / "src/code.py").write_text("1\n")
    assert registry._git_commit(tmp_path / "src") == sha + "-dirty"
