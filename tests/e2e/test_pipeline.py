"""The whole pipeline on a tiny model through both front doors, `dvc repro` and the Prefect flow.

Each front door runs in its own copy of the project (own git repo, DVC cache and MLflow store):
the dvc project in the default finetune.mode (its evaluate runs the lr grid, the mode rows with
latency and the student), the Prefect project in finetune.mode adapters with a slim evaluate
(FLOW_ADAPTERS). Checked: both register a champion; they agree on the data stages, and the flow's
adapters run agrees on every deterministic output with the same parameters run through
`dvc exp run`; a second run does
nothing; a worse model is not promoted; bad data stops the flow with nothing trained or
registered; the served champion answers for every task type; every `finetune.mode` (adapters
included) runs through `dvc exp run` (only finetune onward reruns) and registers a model that
answers every task, loaded from the registry without bertops;
`dvc exp show` / `dvc metrics diff` compare the headline metrics of the run and the experiments.
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
HEADLINE_FILES = [f"metrics/{stage}.json"
                  for stage in ("validate", "tokenize", "pretrain", "finetune", "distill", "evaluate")]
TASKS = ["sentiment", "topic", "wic", "code-entities", "define-qa"]
TINY = {
    "data.corpus_sources": ["speeches", "rotten-tomatoes-plots"],  # tokenize a fifth of the corpus
    "tokenizer.vocab_size": 1000,
    "pretraining_data.dupe_factor": 1,
    "model.preset": "tiny",
    "pretrain.max_steps": 12,
    "pretrain.max_time": None,  # a step budget: the same bytes on every run (a time budget depends on speed)
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
    # both front doors run the lr grid (default 2 rates) and the mode rows with the student; the
    # adapters row at one rate (its grid: tests/unit/test_evaluate_mode_fits.py); 10 timed requests
    "evaluate.adapters_lr_grid": [],
    "evaluate.latency_requests": 10,
}
# the other mode runs check fine-tuning and registration: their evaluate scores the pipeline model
# and the majority baseline only (no lr grid, no mode rows: no fine-tuning in evaluate)
SLIM_EVALUATE = {"evaluate.lr_grid": [], "evaluate.modes": []}
FLOW_ADAPTERS = {"finetune.mode": "adapters", **SLIM_EVALUATE}  # the Prefect project's params


def _run(cmd: list[str], project: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=project, env=project_env(project), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _make_project(dest: Path, data_dir: Path, extra: dict | None = None) -> Path:
    """A fresh project: the repository's files (as a clone would have them), the built-in data, tiny
    params (and `extra` overrides)."""
    copy_repo_files(dest)
    shutil.copytree(data_dir, dest / "data")
    sys.path.insert(0, str(REPO))
    from flows.pipeline import apply_overrides

    apply_overrides(dest, {**TINY, **(extra or {})})
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
    flow_proj = _make_project(base / "prefect", real_data_dir, FLOW_ADAPTERS)
    # The two front doors at once: separate folders, git repos, DVC caches, MLflow stores and Prefect
    # homes, and step budgets (no time budget), so neither sees the other. A tiny run's stages are
    # mostly start-up and imports on one core (measured: user+sys = wall), so on 2 cores they overlap.
    log = base / "flow.log"  # a file, not a pipe: a full pipe would stall the flow while dvc repro runs
    with open(log, "w") as out:
        flow = subprocess.Popen([sys.executable, "-c", "from flows.pipeline import pipeline; pipeline()"],
                                cwd=flow_proj, env=project_env(flow_proj), stdout=out, stderr=subprocess.STDOUT)
    try:
        _run([venv_bin("dvc"), "repro"], dvc_proj)
        flow.wait(timeout=900)
    finally:
        flow.kill()  # only if still running (dvc repro failed); its stages stop with it (bertops.lifeline)
        flow.wait()
    assert flow.returncode == 0, f"the Prefect flow failed ({flow.returncode}):\n{log.read_text()[-8000:]}"
    return dvc_proj, flow_proj


def test_both_front_doors_register_a_champion_and_agree(projects):
    dvc_proj, flow_proj = projects
    results = [json.loads((p / "artifacts/register/result.json").read_text()) for p in projects]
    for project, result in zip(projects, results):
        assert result["alias"] == "champion"
        champion = _mlflow_client(project).get_model_version_by_alias("bertops", "champion")
        assert champion.version == result["version"]
        assert champion.tags["bertops.validation"] == "passed"
    # Same code, data, params and seed: same validated data and tokenizer (fine-tuning differs: FLOW_ADAPTERS)
    locks = [yaml.safe_load((p / "dvc.lock").read_text())["stages"] for p in projects]
    def data_outs(stage):  # stats.json and the tokenize headline carry timings; the rest is deterministic
        timed = ("stats.json", "metrics/tokenize.json")
        return [[o for o in lock[stage]["outs"] if not o["path"].endswith(timed)] for lock in locks]

    for stage in ("validate", "tokenize"):
        first, second = data_outs(stage)
        assert first == second, stage
    # dvc: the lr grid chose the rate; the mode rows (full, adapters, frozen, student) carry latency
    m = json.loads((dvc_proj / "artifacts/evaluate/metrics.json").read_text())
    assert [r["variant"] for r in m["modes"]] == ["finetune", "adapters", "feature_extraction:last", "student"]
    assert all(r["latency_ms"]["p50_ms"] > 0 for r in m["modes"]) and m["modes_latency"]["requests"] == 10
    assert m["lr_selection"]["pretrained"]["grid"] and m["modes"][0]["lr_selection"]  # the full row: the grid's
    assert "adapters_minus_full" in m["modes_margin"]
    # the flow: an adapters model, one adapter per task next to one encoder
    finetune = json.loads((flow_proj / "artifacts/finetune/metrics.json").read_text())
    assert finetune["mode"] == "adapters" and set(finetune["gate"]["tasks"]) == set(TASKS)
    adapters = flow_proj / "artifacts/finetune/model/adapters"
    assert {p.name for p in adapters.iterdir() if p.is_dir()} == set(TASKS)
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
    # headline numbers only (bertops.stages.headline); the detail files are plain outputs
    assert set(files) == set(HEADLINE_FILES)
    finetune = json.loads((dvc_proj / "artifacts/finetune/metrics.json").read_text())
    assert files["metrics/finetune.json"]["data"]["gate_score"] == round(finetune["gate"]["score"], 4)
    pretrain = json.loads((dvc_proj / "artifacts/pretrain/metrics.json").read_text())
    assert files["metrics/pretrain.json"]["data"]["mlm_accuracy"] == round(pretrain["mlm_accuracy"], 4)
    validate = files["metrics/validate.json"]["data"]
    assert validate == {"success": 1, "files": 20, "files_failed": 0, "failures": 0, "records": validate["records"]}


ROWS = [["sentiment", "A warm, funny and clever film.", None],
        ["topic", "Shares fell sharply as the bank reported a loss.", None],
        ["wic", "He sat on the bank of the river.", "She works at the bank."],
        ["code-entities", "Call the save method on a Model instance .", None],
        ["define-qa", "Which word means: a domesticated carnivorous mammal?", "The dog barked all night."]]


def _check_predictions(rows: list[list], preds: list[dict]) -> None:
    """One answer per row, of its task's form."""
    assert [p["task"] for p in preds] == [r[0] for r in rows]
    assert preds[0]["prediction"] in {"rotten", "fresh"}
    assert preds[1]["prediction"] in {"business", "entertainment", "politics", "sport", "tech"}
    assert preds[2]["prediction"] in {"True", "False", "true", "false"}
    assert len(preds[3]["prediction"].split()) == len(rows[3][1].split())
    assert preds[4]["prediction"] in rows[4][2]


def _predict_without_bertops(models: list[tuple[Path, str]]) -> list[list[dict]]:
    """ROWS predicted by each (project, registered model URI `models:/...`), loaded from that
    project's registry by MLflow in one process where bertops cannot be imported."""
    stores = [(f"sqlite:///{project / 'mlflow.db'}", uri) for project, uri in models]
    script = f"""
import json, sys
import pandas as pd
sys.modules["bertops"] = None  # the registered model must not need bertops
import mlflow
out = []
for store, uri in {stores!r}:
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(uri)
    preds = model.predict(pd.DataFrame({ROWS!r}, columns=["task", "text", "text_pair"]))
    out.append(preds[["task", "prediction", "score"]].to_dict(orient="records"))
assert not [k for k, v in sys.modules.items() if k.startswith("bertops") and v is not None]
print(json.dumps(out))
"""
    proc = _run([sys.executable, "-c", script], models[0][0], timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_served_champion_answers_every_task_type(projects):
    dvc_proj, _ = projects
    port = free_port()
    server = subprocess.Popen([venv_bin("bertops"), "serve", "--port", str(port)], cwd=dvc_proj,
                              env=project_env(dvc_proj), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=120, proc=server)
        rows = ROWS
        body = json.dumps({"dataframe_split": {"columns": ["task", "text", "text_pair"], "data": rows}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            preds = json.loads(r.read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    _check_predictions(rows, preds)


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


OTHER_MODES = ("feature_extraction", "adapters", "single_task")  # single_task last: the workspace keeps it


@pytest.fixture(scope="module")
def mode_runs(projects):
    """The dvc project's run committed as a user would (dvc.lock, params.yaml and the git-tracked
    metrics/), then one `dvc exp run -S finetune.mode=...` per other mode (the run above used the
    default, finetune), with evaluate slimmed (SLIM_EVALUATE). What each run left is recorded
    before the next one overwrites it."""
    dvc_proj, _ = projects
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(git + ["add", "dvc.lock", "params.yaml", "metrics"], dvc_proj)
    _run(git + ["commit", "-qm", "pipeline run"], dvc_proj)

    from bertops.model.multitask import CONFIG_NAME

    def snapshot(stdout: str) -> dict:
        model = dvc_proj / "artifacts/finetune/model"
        return {"stdout": stdout, "model_files": sorted(p.name for p in model.iterdir()),
                "metrics": json.loads((dvc_proj / "artifacts/finetune/metrics.json").read_text()),
                "headline": json.loads((dvc_proj / "metrics/finetune.json").read_text()),
                "evaluate": json.loads((dvc_proj / "artifacts/evaluate/metrics.json").read_text()),
                "register": json.loads((dvc_proj / "artifacts/register/result.json").read_text()),
                "config": {t: json.loads((model / (t if (model / t).is_dir() else "") / CONFIG_NAME).read_text())
                           for t in TASKS}}

    runs = {"finetune": snapshot("")}
    for mode in OTHER_MODES:
        sets = {"finetune.mode": mode, **SLIM_EVALUATE}
        cmd = [venv_bin("dvc"), "exp", "run"] + [a for k, v in sets.items() for a in ("-S", f"{k}={v}")]
        runs[mode] = snapshot(_run(cmd, dvc_proj).stdout)
    return runs


def test_every_finetune_mode_runs_through_dvc_and_registers_a_model_for_every_task(projects, mode_runs):
    dvc_proj, flow_proj = projects
    for mode in OTHER_MODES:
        out = mode_runs[mode]["stdout"]
        assert "Running stage 'finetune'" in out and "Running stage 'register'" in out, mode
        assert not any(f"Running stage '{s}'" in out for s in ("validate", "tokenize", "pretrain")), mode
    versions = set()
    for mode, run in mode_runs.items():
        assert run["metrics"]["mode"] == mode and set(run["metrics"]["tasks"]) == set(TASKS)
        assert set(run["metrics"]["gate"]["tasks"]) == set(TASKS)
        assert run["evaluate"]["n_examples"] == {t: 16 for t in TASKS}  # the test split was scored
        configs = run["config"]
        if mode == "single_task":  # one model per task under finetune/model, and the manifest
            assert run["model_files"] == sorted(TASKS + ["single_task.json"])
            assert all([s["name"] for s in configs[t]["tasks"]] == [t] for t in TASKS)
        else:
            assert "model.safetensors" in run["model_files"]
            assert all([s["name"] for s in configs[t]["tasks"]] == TASKS for t in TASKS)
        assert all(c["freeze_encoder"] == (mode == "feature_extraction") for c in configs.values())
        # adapters: one plain encoder plus each task's LoRA adapter and head under adapters/<task>/
        assert ("adapters" in run["model_files"]) == (mode == "adapters"), mode
        assert all((c.get("adapters") is not None) == (mode == "adapters") for c in configs.values()), mode
        versions.add(run["register"]["version"])
    assert len(versions) == 4
    # every registered version, and the flow's adapters champion, serves every task from the registry
    # without bertops (in single_task mode each row goes to its task's model; in adapters mode to its
    # task's adapter)
    models = [(dvc_proj, f"models:/bertops/{v}") for v in sorted(versions)] + [(flow_proj, "models:/bertops@champion")]
    for preds in _predict_without_bertops(models):
        _check_predictions(ROWS, preds)


def _headline_rows(show: list[dict]) -> dict[str, dict]:
    """`dvc exp show --json` -> {finetune.mode of the commit or experiment: {metrics file: data}}."""
    rows = {}
    for commit in show:
        if commit["rev"] == "workspace":
            continue
        for rev in [commit] + [exp["revs"][0] for exp in commit.get("experiments") or []]:
            mode = rev["data"]["params"]["params.yaml"]["data"]["finetune"]["mode"]
            assert mode not in rows, mode
            rows[mode] = {f: m["data"] for f, m in rev["data"]["metrics"].items()}
    return rows


def test_dvc_exp_show_and_metrics_diff_compare_headline_metrics(projects, mode_runs):
    dvc_proj, _ = projects
    rows = _headline_rows(json.loads(_run([venv_bin("dvc"), "exp", "show", "--json"], dvc_proj).stdout))
    # the committed run and the experiments, each with real numbers (`dvc exp show` printed `!`)
    assert set(rows) == {"finetune", *OTHER_MODES}
    numbers = {"metrics/validate.json": ["success", "failures", "records"],
               "metrics/tokenize.json": ["tokens", "tokens_per_s"],
               "metrics/pretrain.json": ["mlm_accuracy", "nsp_accuracy", "train_tokens_per_s"],
               "metrics/finetune.json": ["gate_score", "selection_score"],
               "metrics/evaluate.json": ["test_score", "majority_test_score"]}
    for mode, files in rows.items():
        assert set(files) == set(HEADLINE_FILES), mode  # the detail files are not metrics
        for file, keys in numbers.items():
            for key in keys:
                value = files[file][key]
                assert isinstance(value, (int, float)) and not isinstance(value, bool), (mode, file, key, value)
        assert files["metrics/finetune.json"] == mode_runs[mode]["headline"], mode  # its own run's numbers
    assert rows["single_task"]["metrics/pretrain.json"] == rows["finetune"]["metrics/pretrain.json"]
    # the workspace holds the last experiment (single_task): against the commit, fine-tuning changed
    diff = json.loads(_run([venv_bin("dvc"), "metrics", "diff", "--json"], dvc_proj).stdout)
    assert diff.get("metrics/finetune.json"), diff
    assert "metrics/pretrain.json" not in diff
    committed, last = mode_runs["finetune"]["headline"], mode_runs["single_task"]["headline"]
    for key, change in diff["metrics/finetune.json"].items():
        group, _, task = key.partition(".")
        assert (change["old"], change["new"]) == ((committed[group][task], last[group][task]) if task
                                                  else (committed[key], last[key]))


def test_adapters_through_both_front_doors_agree(projects, mode_runs):
    """The same parameters (TINY + FLOW_ADAPTERS) through the Prefect flow and `dvc exp run`: the
    same adapters model's gate score and the same evaluation, byte for byte in metrics.json."""
    _, flow_proj = projects
    dvc_run = mode_runs["adapters"]
    flow_eval = json.loads((flow_proj / "artifacts/evaluate/metrics.json").read_text())
    assert flow_eval == dvc_run["evaluate"] and flow_eval["modes"] == []
    flow_register = json.loads((flow_proj / "artifacts/register/result.json").read_text())
    assert flow_register["gate_value"] == dvc_run["register"]["gate_value"]
    flow_finetune = json.loads((flow_proj / "artifacts/finetune/metrics.json").read_text())
    assert flow_finetune["gate"] == dvc_run["metrics"]["gate"] and flow_finetune["costs"] == dvc_run["metrics"]["costs"]


def test_bad_data_stops_the_flow_before_training_and_registers_nothing(projects):
    _, flow_proj = projects
    lock_before = (flow_proj / "dvc.lock").read_text()
    versions_before = len(_versions(flow_proj))
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
    assert len(_versions(flow_proj)) == versions_before
