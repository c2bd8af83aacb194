"""The whole pipeline on a tiny model through both front doors, `dvc repro` and the Prefect flow.

Each front door runs in its own copy of the project (own git repo, DVC cache and MLflow store).
Checked: both register a champion and agree on every deterministic output; a second run does
nothing; a worse model is not promoted; bad data stops the flow with nothing trained or
registered; the served champion answers for every task type.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import copy_repo_files, free_port, git_commit_all, project_env, venv_bin, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "data.corpus_sources": ["speeches", "rotten-tomatoes-plots"],  # tokenize a fifth of the corpus
    "tokenizer.vocab_size": 1000,
    "pretraining_data.dupe_factor": 1,
    "model.preset": "tiny",
    "pretrain.max_steps": 12,
    "pretrain.batch_size": 8,
    "pretrain.warmup_steps": 2,
    "pretrain.log_every_n_steps": 2,
    "pretrain.checkpoint_every_n_steps": 6,
    "pretrain.eval_every_n_steps": None,
    "pretrain.eval_max_batches": 4,
    "pretrain.peak_tflops": 0.1,
    "finetune.max_train_examples_per_task": 32,
    "finetune.max_eval_examples_per_task": 16,
    "finetune.max_epochs": 1,
    "finetune.batch_size": 8,
    "evaluate.seeds": [1234],
    "evaluate.baselines": ["majority"],
    "evaluate.max_test_examples_per_task": 16,
}


_env = project_env


def _run(cmd: list[str], project: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=project, env=_env(project), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _make_project(dest: Path, data_dir: Path) -> Path:
    """A fresh project: the repository's files (as a clone would have them), the built-in data, tiny params."""
    copy_repo_files(dest)
    shutil.copytree(data_dir, dest / "data")
    sys.path.insert(0, str(REPO))
    from flows.pipeline import apply_overrides

    apply_overrides(dest, TINY)
    git_commit_all(dest, "e2e")
    return dest


def _mlflow_client(project: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _versions(project: Path, name: str = "bertops") -> list:
    return _mlflow_client(project).search_model_versions(f"name='{name}'")


@pytest.fixture(scope="module")
def projects(tmp_path_factory, real_data_dir):
    base = tmp_path_factory.mktemp("e2e")
    dvc_proj = _make_project(base / "dvc", real_data_dir)
    flow_proj = _make_project(base / "prefect", real_data_dir)
    _run([venv_bin("dvc"), "repro"], dvc_proj)
    _run([sys.executable, "-c", "from flows.pipeline import pipeline; pipeline()"], flow_proj)
    return dvc_proj, flow_proj


def test_both_front_doors_register_a_champion_and_agree(projects):
    dvc_proj, flow_proj = projects
    results = [json.loads((p / "artifacts/register/result.json").read_text()) for p in projects]
    for project, result in zip(projects, results):
        assert result["alias"] == "champion"
        champion = _mlflow_client(project).get_model_version_by_alias("bertops", "champion")
        assert champion.version == result["version"]
        assert champion.tags["bertops.validation"] == "passed"
    # Same code, data, params and seed: same tokenizer, pretraining data and evaluation.
    locks = [yaml.safe_load((p / "dvc.lock").read_text())["stages"] for p in projects]
    def data_outs(stage):  # stats.json carries timings; everything else is deterministic
        return [[o for o in lock[stage]["outs"] if not o["path"].endswith("stats.json")] for lock in locks]

    for stage in ("validate", "tokenize"):
        first, second = data_outs(stage)
        assert first == second, stage
    metrics = [json.loads((p / "artifacts/evaluate/metrics.json").read_text()) for p in projects]
    assert metrics[0] == metrics[1]
    assert results[0]["gate_value"] == results[1]["gate_value"]
    # The Prefect run is recorded in the lineage; the dvc run has none.
    flow_tags = _mlflow_client(flow_proj).get_model_version("bertops", results[1]["version"]).tags
    assert flow_tags["bertops.prefect_flow_run_id"] != "none"


def test_second_run_does_nothing(projects):
    dvc_proj, flow_proj = projects
    out = _run([venv_bin("dvc"), "repro"], dvc_proj).stdout
    assert "Running stage" not in out
    assert _run([venv_bin("dvc"), "status"], dvc_proj).stdout.strip().endswith("up to date.")
    _run([sys.executable, "-c", "from flows.pipeline import pipeline; pipeline()"], flow_proj)
    assert len(_versions(dvc_proj)) == 1 and len(_versions(flow_proj)) == 1


def test_dvc_plots_and_metrics_show_the_run(projects):
    dvc_proj, _ = projects
    plots = json.loads(_run([venv_bin("dvc"), "plots", "show", "--json"], dvc_proj).stdout)["data"]
    assert plots["artifacts/pretrain/plots/pretrain_curves.png"][0]["type"] == "image"
    pretrain = plots["artifacts/pretrain/logs/metrics.csv"][0]["content"]
    assert pretrain["encoding"]["x"]["field"] == "step"
    assert sum(1 for row in pretrain["data"]["values"] if row.get("train/loss")) >= 2
    finetune = plots["artifacts/finetune/logs/metrics.csv"][0]["content"]["data"]["values"]
    assert any(row.get("val/score") for row in finetune)
    scores = plots["artifacts/evaluate/plots/scores.json"][0]["content"]["data"]["values"]
    assert {"pipeline", "majority"} <= {row["model"] for row in scores}
    metrics = json.loads(_run([venv_bin("dvc"), "metrics", "show", "--json"], dvc_proj).stdout)
    files = next(iter(metrics.values()))["data"]
    written = json.loads((dvc_proj / "artifacts/finetune/metrics.json").read_text())
    assert files["artifacts/finetune/metrics.json"]["data"]["score"] == written["score"]
    assert "mlm_accuracy" in files["artifacts/pretrain/metrics.json"]["data"]


def test_served_champion_answers_every_task_type(projects):
    dvc_proj, _ = projects
    port = free_port()
    server = subprocess.Popen([venv_bin("bertops"), "serve", "--port", str(port)], cwd=dvc_proj,
                              env=_env(dvc_proj), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=120, proc=server)
        rows = [["sentiment", "A warm, funny and clever film.", None],
                ["topic", "Shares fell sharply as the bank reported a loss.", None],
                ["wic", "He sat on the bank of the river.", "She works at the bank."],
                ["code-entities", "Call the save method on a Model instance .", None],
                ["define-qa", "Which word means: a domesticated carnivorous mammal?", "The dog barked all night."]]
        body = json.dumps({"dataframe_split": {"columns": ["task", "text", "text_pair"], "data": rows}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            preds = json.loads(r.read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [p["task"] for p in preds] == [r[0] for r in rows]
    assert preds[0]["prediction"] in {"rotten", "fresh"}
    assert preds[1]["prediction"] in {"business", "entertainment", "politics", "sport", "tech"}
    assert preds[2]["prediction"] in {"True", "False", "true", "false"}
    assert len(preds[3]["prediction"].split()) == len(rows[3][1].split())
    assert preds[4]["prediction"] in rows[4][2]


def test_gate_refuses_a_model_that_does_not_beat_the_champion(projects):
    dvc_proj, _ = projects
    from flows.pipeline import apply_overrides

    apply_overrides(dvc_proj, {"register.threshold": 1.0})  # nothing beats the champion by 1.0
    out = _run([venv_bin("dvc"), "repro"], dvc_proj).stdout
    assert "Running stage 'register'" in out and "Running stage 'pretrain'" not in out
    result = json.loads((dvc_proj / "artifacts/register/result.json").read_text())
    assert result["alias"] == "challenger"
    client = _mlflow_client(dvc_proj)
    assert str(client.get_model_version_by_alias("bertops", "champion").version) == "1"
    assert "does not beat champion" in client.get_model_version("bertops", result["version"]).tags[
        "bertops.gate_reason"]


def test_bad_data_stops_the_flow_before_training_and_registers_nothing(projects):
    _, flow_proj = projects
    lock_before = (flow_proj / "dvc.lock").read_text()
    path = flow_proj / "data/tasks/sentiment/train.jsonl"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[3])
    bad["label"] = "lukewarm"
    lines[3] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    proc = _run([sys.executable, "-c", "from flows.pipeline import pipeline; pipeline()"], flow_proj, check=False)
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert "sentiment/train.jsonl" in log and bad["id"] in log
    assert (flow_proj / "dvc.lock").read_text() == lock_before  # no stage ran to completion
    assert len(_versions(flow_proj)) == 1
