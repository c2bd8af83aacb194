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
    import subprocess
    import sys
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-f", "-q"], cwd=tmp_path, check=True)
    assert flow_module.dvc_stage_order(tmp_path) == ["first", "second"]


def test_overrides_are_written_to_params_yaml_keeping_comments(flow_module, tmp_path):
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    flow_module.apply_overrides(tmp_path, {"register.threshold": 0.5})
    text = (tmp_path / "params.yaml").read_text()
    assert "# The one source of parameters" in text
    assert load_params(tmp_path / "params.yaml").register_.threshold == 0.5


def test_flow_and_load_params_walk_overrides_alike(flow_module, tmp_path):
    # one walker (config.apply_override): a section params.yaml leaves out is created by both,
    # where the flow's own walker used to stop with KeyError: 'pretrain'
    path = tmp_path / "params.yaml"
    path.write_text("# my trimmed params\nseed: 7  # the seed\n")
    overrides = {"pretrain.max_steps": 50, "model.overrides.hidden_dropout_prob": 0.0}
    expected = load_params(path, overrides)
    flow_module.apply_overrides(tmp_path, overrides)
    assert "# my trimmed params" in path.read_text() and "# the seed" in path.read_text()
    written = load_params(path)
    assert written == expected and written.pretrain.max_steps == 50 and written.seed == 7


def test_apply_override_on_a_ruamel_tree_keeps_comments(tmp_path):
    import io

    from ruamel.yaml import YAML

    from bertops.config import apply_override

    yaml = YAML()
    tree = yaml.load("a:\n  b: 1  # keep me\n")
    apply_override(tree, "a.c.d", 2)
    apply_override(tree, "a.b", 3)
    with pytest.raises(KeyError, match="'b' is not a section"):
        apply_override(tree, "a.b.x", 4)
    out = io.StringIO()
    yaml.dump(tree, out)
    assert "# keep me" in out.getvalue() and yaml.load(out.getvalue()) == {"a": {"b": 3, "c": {"d": 2}}}


def test_bad_override_leaves_params_untouched(flow_module, tmp_path):
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_text()
    with pytest.raises(Exception, match="treshold"):
        flow_module.apply_overrides(tmp_path, {"register.treshold": 0.5})
    assert (tmp_path / "params.yaml").read_text() == before


STAGE = """
import os, pathlib, signal, sys, time
def stop(*_):
    pathlib.Path("checkpoint").write_text("saved")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
pathlib.Path("stage.pid").write_text(str(os.getpid()))
while True:
    time.sleep(0.1)
"""

DRIVER = """
import signal, sys
sys.path.insert(0, sys.argv[2])
import flows.pipeline as p

class TerminationSignal(BaseException):  # what Prefect raises in a flow run on SIGTERM
    pass

def raise_termination(*_):
    raise TerminationSignal()

signal.signal(signal.SIGTERM, raise_termination)
p._dvc = lambda: sys.argv[1]
p.run_dvc_stage("pretrain", ".", {}, grace_seconds=20)
"""


def test_stopping_the_flow_run_stops_the_stage_it_runs(tmp_path):
    # A cancelled flow run must not leave its stage training on as an orphan: the stage (here a
    # stand-in that checkpoints on SIGTERM, as `bertops stage pretrain` does) gets SIGTERM even
    # though `dvc`, like the real one, dies on SIGTERM without passing it on.
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    fake_dvc = tmp_path / "dvc"
    fake_dvc.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                        f"subprocess.Popen([sys.executable, '-c', {STAGE!r}]).wait()\n")
    fake_dvc.chmod(0o755)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(fake_dvc), str(Path.cwd())], cwd=tmp_path)
    pid_file = tmp_path / "stage.pid"
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pid_file.exists(), "the stage never started"
        time.sleep(0.3)  # the stage's handler is installed before it writes its pid
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=30) != 0
        assert (tmp_path / "checkpoint").read_text() == "saved"
        stage_pid = int(pid_file.read_text())
        time.sleep(0.5)
        try:
            os.kill(stage_pid, 0)
            alive = Path(f"/proc/{stage_pid}/status").read_text().find("zombie") < 0
        except ProcessLookupError:
            alive = False
        assert not alive, "the stage is still running after the flow run stopped"
    finally:
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
        driver.kill()
