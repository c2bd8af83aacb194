"""The task-type registry: the four built-in kinds are found by module, params ask it, config stays
torch-free, and a fifth kind (tests/task_type_regression.py, text_regression) is all a new kind needs:
once registered, params validation, record checks, the model (features, head, loss, decoding, save and
load), metrics, the baseline, fine-tuning's scoring and the validation stage all dispatch to it."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import bertops.model.multitask as mt
from bertops.config import Params, TaskParams, load_params
from bertops.config_tasks import check_tasks
from bertops.data import tasks as T
from bertops.errors import BertopsError, DataError
from bertops.evaluate import baselines
from bertops.evaluate.metrics import primary_metric, task_metrics, task_score
from bertops.model.multitask import MultiTaskModel, collate, get_task_type, register_task_type
from bertops.model.multitask.task_types import TASK_TYPES, unregister_task_type
from tests.task_type_regression import TASK_TYPE as REGRESSION

BUILTIN = {"sequence_classification": "sequence", "pair_classification": "pair",
           "token_classification": "token", "extractive_qa": "span"}
TRAIN = [{"id": f"r{i}", "text": t, "score": v} for i, (t, v) in enumerate(
    [("a great film", 4.5), ("dull", 1.0), ("fine enough", 3.0), ("awful and long", 0.5)])]


@pytest.fixture
def regression():
    register_task_type(REGRESSION)
    yield REGRESSION
    unregister_task_type(REGRESSION.name)


def regression_params(path="x", **kw) -> TaskParams:
    return TaskParams(type="text_regression", path=str(path), text_fields=["text"], label_field="score", **kw)


def test_builtin_types_are_registered_from_their_modules():
    assert {name: type(t).__module__.rsplit(".", 1)[-1] for name, t in TASK_TYPES.items()} == BUILTIN
    with pytest.raises(ValueError, match=r"unknown task type 'nope'; known: extractive_qa, pair_classification"):
        get_task_type("nope")


def _check(**task) -> Params:
    return check_tasks(Params(tasks={"t": TaskParams(**task)}))


def test_params_reject_an_unknown_type_and_ask_the_type_for_its_fields(tmp_path, capsys):
    # checked where tasks are used (bertops.config_tasks.check_tasks), not when params load
    from bertops.cli import main

    p = tmp_path / "params.yaml"
    p.write_text("tasks:\n  t:\n    type: text_regression\n    path: x\n    text_fields: [text]\n")
    with pytest.raises(BertopsError, match=r"tasks\.t\.type: unknown task type 'text_regression'; known: "
                                           r"extractive_qa, pair_classification"):
        check_tasks(load_params(p))
    assert main(["stage", "validate", "--params", str(p)]) == 2
    assert capsys.readouterr().err.startswith("bertops: error: tasks.t.type: unknown task type 'text_regression'")
    with pytest.raises(BertopsError, match="sequence_classification needs a `labels` list"):
        _check(type="sequence_classification", path="x", text_fields=["a"])
    with pytest.raises(BertopsError, match="pair_classification needs exactly 2 text_fields"):
        _check(type="pair_classification", path="x", text_fields=["a"], labels=[True])
    assert _check(type="extractive_qa", path="x").tasks["t"].labels == []  # QA needs no labels


def test_config_and_registry_import_without_torch():
    script = ("import sys; import bertops.config, bertops.model.multitask.task_types as tt; "
              "bertops.config.load_params('params.yaml'); "
              "heavy = [m for m in ('torch', 'transformers', 'seqeval', 'lightning') if m in sys.modules]; "
              "assert not heavy, heavy; print(sorted(tt.TASK_TYPES))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(sorted(BUILTIN))


def test_hub_dataset_key_is_refused_naming_task_and_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("tasks:\n  sentiment:\n    type: sequence_classification\n    dataset: rotten_tomatoes\n"
                 "    text_fields: [text]\n    labels: [neg, pos]\n")
    with pytest.raises(ValidationError, match=r"tasks\.sentiment\.dataset: Hub datasets are not supported") as e:
        load_params(p)
    assert "tasks.sentiment.path" in str(e.value)  # and says what to do instead
    p.write_text("tasks:\n  s:\n    type: sequence_classification\n    path: x\n    dataset_config: plain\n"
                 "    text_fields: [text]\n    labels: [neg, pos]\n")
    with pytest.raises(ValidationError, match=r"tasks\.s\.dataset_config: Hub datasets are not supported"):
        load_params(p)
    with pytest.raises(ValidationError, match="dataset"):  # not a field either, when built directly
        TaskParams(type="sequence_classification", path="x", dataset="d", text_fields=["t"], labels=["a"])


# --- a fifth kind of task ----------------------------------------------------------------------------


def test_fifth_type_found_by_discovery_when_its_file_is_added(tmp_path):
    """Adding the kind is one file: a copy of the package with tests/task_type_regression.py dropped
    into task_types/ registers it, with no other edit (and imports without bertops, as served)."""
    pkg = tmp_path / "multitask"
    shutil.copytree(Path(mt.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(Path(__file__).parents[1] / "task_type_regression.py", pkg / "task_types" / "regression.py")
    script = (f"import sys; sys.modules['bertops'] = None; sys.path.insert(0, {str(tmp_path)!r}); "
              "from multitask.task_types import TASK_TYPES; t = TASK_TYPES['text_regression']; "
              "print(type(t).__module__, t.metrics([1.0, 2.0], [1.0, 3.0])['mae'])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["multitask.task_types.regression", "0.5"]


def test_fifth_type_params_and_record_checks(regression, tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("tasks:\n  stars:\n    type: text_regression\n    path: x\n    text_fields: [text]\n"
                 "    label_field: score\n")
    assert check_tasks(load_params(p)).tasks["stars"].type == "text_regression"
    p.write_text("tasks:\n  stars:\n    type: text_regression\n    path: x\n")
    with pytest.raises(BertopsError, match="tasks.stars: text_regression needs exactly 1 text_fields"):
        check_tasks(load_params(p))

    tp = regression_params(tmp_path)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRAIN))
    assert T.load_records(tp, "train", "stars") == TRAIN
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "bad", "text": "x", "score": "high"}) + "\n")
    with pytest.raises(DataError, match=r"record bad: rule 'target is a number' broken: 'high'"):
        T.load_records(tp, "train", "stars")


def test_fifth_type_trains_predicts_and_round_trips(regression, encoder_dir, tmp_path):
    spec = T.TaskSpec.from_params("stars", regression_params())
    other = T.TaskSpec.from_params("sent", TaskParams(type="sequence_classification", path="x",
                                                      text_fields=["text"], labels=["neg", "pos"]))
    torch.manual_seed(0)
    model = MultiTaskModel.build(encoder_dir, [spec, other], classifier_dropout=0.0)
    assert model.heads["stars"][1].out_features == 1 and spec.num_labels == 1

    features = T.encode_records(model.tokenizer, spec, TRAIN)
    batch = collate(features, model.tokenizer.pad_token_id)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [4.5, 1.0, 3.0, 0.5]
    model.eval()  # no dropout: fit the four targets exactly, deterministically
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        logits = model("stars", batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        loss = model.loss(spec, logits, batch)
        expected = ((logits.squeeze(-1) - batch["labels"]) ** 2).mean()
        torch.testing.assert_close(loss, expected)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.01 * losses[0]  # it learns the four targets

    preds = model.predict("stars", [r["text"] for r in TRAIN])
    values = [p["value"] for p in preds]
    assert values == pytest.approx([4.5, 1.0, 3.0, 0.5], abs=0.25)
    flat = model.predict_one("stars", "dull")
    assert flat["score"] == pytest.approx(preds[1]["value"], abs=1e-5) and flat["prediction"] == f"{flat['score']:.4f}"

    model.save_pretrained(tmp_path / "m")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "m")
    assert [p["value"] for p in loaded.predict("stars", [r["text"] for r in TRAIN])] == pytest.approx(values)


def test_fifth_type_metrics_baseline_and_finetune_scoring(regression):
    from bertops.train.finetune import decoded_predictions, score_task

    spec = T.TaskSpec.from_params("stars", regression_params())
    gold = [T.gold_label(spec, r) for r in TRAIN]
    m = task_metrics("text_regression", [4.0, 1.0, 3.0, 1.0], gold)
    assert m == {"mae": pytest.approx(0.25), "r2": pytest.approx(1 - 0.5 / 10.25)}
    assert task_score("text_regression", m) == m["r2"] and primary_metric("text_regression", "accuracy") == "r2"
    majority = baselines.majority_predictions(spec, TRAIN, TRAIN[:2])
    assert majority == [2.25, 2.25]
    assert task_metrics("text_regression", [2.25] * 4, gold)["r2"] == pytest.approx(0.0)
    assert decoded_predictions(spec, [{"value": 1.5}, {"value": 2.0}]) == [1.5, 2.0]
    assert score_task(spec, [4.0, 1.0, 3.0, 1.0], gold)["score"] == pytest.approx(m["r2"])


def test_fifth_type_runs_through_the_validation_stage(regression, tmp_path):
    from bertops.validation.runner import validate_data

    data = tmp_path / "data"
    (data / "corpus").mkdir(parents=True)
    task_dir = data / "tasks" / "stars"
    task_dir.mkdir(parents=True)
    splits = {"train": TRAIN,
              "validation": [{"id": "v1", "text": "so so", "score": "3"},  # a string: is_float
                             {"id": "v2", "text": "endless", "score": math.inf}],  # finite_target
              "test": [{"id": "t1", "text": "a great film", "score": 4.0}]}  # same input as train r0
    for split, recs in splits.items():
        (task_dir / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    params = Params.model_validate({"data": {"dir": str(data), "corpus_sources": []},
                                    "tasks": {"stars": {"type": "text_regression", "path": str(task_dir),
                                                        "text_fields": ["text"], "label_field": "score"}}})
    result = validate_data(params)
    reports = {r.split: r for r in result.files if r.task == "stars"}
    failed = {split: sorted((f.rule, f.record_id) for f in r.failures) for split, r in reports.items()}
    assert failed == {"train": [], "validation": [("finite_target", "v2"), ("is_float:score", "v1")],
                      "test": [("text_in_one_split", "t1")]}
    assert reports["validation"].rules["finite_target"].checked == 1  # the string is not counted twice
    assert reports["train"].balance_unit == "examples" and reports["train"].class_balance is None
