"""The Prefect flow follows dvc.yaml instead of keeping its own list of stages."""

import shutil

import pytest
import yaml

from bertops.config import load_params


@pytest.fixture(scope="module")
def flow_module():
    return pytest.importorskip("flows.pipeline")


def test_stage_order_comes_from_dvc_graph(flow_module):
    order = flow_module.dvc_stage_order()
    declared = list(yaml.safe_load(open("dvc.yaml"))["stages"])
    assert sorted(order) == sorted(declared)
    for before, after in [("validate", "tokenize"), ("tokenize", "pretrain"), ("pretrain", "finetune"),
                          ("finetune", "evaluate"), ("evaluate", "register")]:
        assert order.index(before) < order.index(after)


def test_stage_order_follows_an_edited_dvc_yaml(flow_module, tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "second": {"cmd": "cat a > b", "deps": ["a"], "outs": ["b"]},
        "first": {"cmd": "echo > a", "outs": ["a"]}}}))
    import subprocess, sys
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-f", "-q"], cwd=tmp_path, check=True)
    assert flow_module.dvc_stage_order(tmp_path) == ["first", "second"]


def test_overrides_are_written_to_params_yaml_keeping_comments(flow_module, tmp_path):
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    flow_module.apply_overrides(tmp_path, {"register.threshold": 0.5})
    text = (tmp_path / "params.yaml").read_text()
    assert "# The one source of parameters" in text
    assert load_params(tmp_path / "params.yaml").register_.threshold == 0.5


def test_bad_override_leaves_params_untouched(flow_module, tmp_path):
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_text()
    with pytest.raises(Exception, match="treshold"):
        flow_module.apply_overrides(tmp_path, {"register.treshold": 0.5})
    assert (tmp_path / "params.yaml").read_text() == before
