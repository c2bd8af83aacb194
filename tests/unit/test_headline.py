"""Headline metrics (metrics/<stage>.json): a few numbers per stage, taken from the stage's detail."""

from __future__ import annotations

import json
import re
import sys

import pytest
import yaml

from bertops.config import load_params
from bertops.errors import BertopsError
from bertops.stages import headline
from tests.helpers import REPO


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def params(tmp_path):
    return load_params(REPO / "params.yaml", {
        "validate.out_dir": str(tmp_path / "validation"),
        "pretraining_data.stats_path": str(tmp_path / "tokenize/stats.json"),
        "pretrain.out_dir": str(tmp_path / "pretrain"),
        "finetune.out_dir": str(tmp_path / "finetune"),
        "evaluate.out_dir": str(tmp_path / "evaluate"),
        "distill.out_dir": str(tmp_path / "distill"),
    })


def test_each_stage_headline_is_a_few_numbers_from_its_detail(tmp_path, params):
    # the validation summary has a counter per file and rule: none of them is a headline
    _write(tmp_path / "validation/summary.json", {
        "success": True, "files": 20, "files_failed": 0, "records": 37503, "failures": 0,
        "rules": {f"rule{i}": {"failed": 0} for i in range(50)},
        "per_file": {f"f{i}": {"records": 10, "failures": 0} for i in range(20)}})
    _write(tmp_path / "tokenize/stats.json", {
        "vocab_size": 1000, "splits": {"train": {"examples": 70}, "validation": {"examples": 5}},
        "total": {"tokens": 9000}, "tokens_per_s": 123456.7, "fingerprint": "abc"})
    _write(tmp_path / "pretrain/metrics.json", {
        "mlm_accuracy": 0.123456, "nsp_accuracy": 0.61, "mlm_loss": 6.4, "global_step": 12,
        "train_tokens": 3000, "train_seconds_total": 12.345,
        "baseline_mlm_most_frequent_token_accuracy": 0.03, "train_tokens_per_s": 11712.4, "mfu": None,
        "info": {"flop_convention": "a string"}})
    _write(tmp_path / "finetune/metrics.json", {
        "score": 0.5, "gate": {"score": 0.25, "tasks": {"a": {"score": 0.5, "f1": 0.1}, "b": {"score": 0.0}}},
        "steps": 20, "history": [{"epoch": 0}], "tasks": {"a": {"score": 0.5}}})
    _write(tmp_path / "distill/metrics.json", {
        "score": 0.41, "gate": {"score": 0.123456, "tasks": {"a": {"score": 0.1}}}, "steps": 7,
        "student": {"num_hidden_layers": 1, "encoder_params": 1000}, "teacher_params": 2000, "history": []})
    _write(tmp_path / "evaluate/metrics.json", {
        "mean_score": 0.3, "pipeline": {"a": {"score": {"mean": 0.4}}, "b": {"score": {"mean": 0.2}},
                                        "mean_score": {"mean": 0.3}},
        "majority": {"mean_score": {"mean": 0.1}}, "split": "test",
        "lr_selection": {"pretrained": {"chosen": 0.001, "grid": [{"lr": 0.001, "validation_score": 0.5},
                                                                  {"lr": 0.002, "validation_score": 0.4}],
                                        "tasks": {"a": {"lr": 0.001}, "b": {"lr": 0.002}}},
                         "random_init": {"chosen": 0.002, "grid": [{"lr": 0.001, "validation_score": 0.3},
                                                                   {"lr": 0.002, "validation_score": 0.35}]}},
        "verdict": {"wins": 3, "ties": 1, "losses": 1, "tasks": {"a": {"outcome": "win"}},
                    "mean_score": {"difference": 0.031234, "ci_low": 0.01, "ci_high": 0.05, "outcome": "win"}}})
    written = {stage: headline.write(stage, params, root=tmp_path) for stage in headline.HEADLINES}
    read = {stage: json.loads(path.read_text()) for stage, path in written.items()}
    assert read["validate"] == {"success": 1, "files": 20, "files_failed": 0, "records": 37503, "failures": 0}
    assert read["tokenize"] == {"vocab_size": 1000, "train_examples": 70, "validation_examples": 5,
                                "tokens": 9000, "tokens_per_s": 123457}
    assert read["pretrain"] == {"mlm_accuracy": 0.1235, "nsp_accuracy": 0.61, "mlm_loss": 6.4, "global_step": 12,
                                "train_tokens": 3000, "train_seconds": 12.3,
                                "baseline_mlm_most_frequent_token_accuracy": 0.03, "train_tokens_per_s": 11712}
    assert read["finetune"] == {"gate_score": 0.25, "selection_score": 0.5, "gate": {"a": 0.5, "b": 0.0},
                                "steps": 20}
    assert read["evaluate"] == {"test_score": 0.3, "test": {"a": 0.4, "b": 0.2}, "majority_test_score": 0.1,
                                "lr": {"pretrained": 0.001, "random_init": 0.002},
                                "lr_tasks": {"pretrained": {"a": 0.001, "b": 0.002}},
                                "pretrained_vs_random": {"wins": 3, "ties": 1, "losses": 1, "mean_difference": 0.0312,
                                                         "mean_ci_low": 0.01, "mean_ci_high": 0.05}}
    assert read["distill"] == {"gate_score": 0.1235, "selection_score": 0.41, "student_params": 1000,
                               "teacher_params": 2000, "steps": 7}
    assert written["finetune"] == tmp_path / "metrics/finetune.json"
    assert headline.write("register", params, root=tmp_path) is None


def test_evaluate_headline_has_each_mode_rows_score_and_latency_and_the_adapters_margin(tmp_path, params):
    rows = [{"variant": "finetune", "score": 0.461234, "latency_ms": {"p50_ms": 5.6789, "p95_ms": 9.0}},
            {"variant": "adapters", "score": 0.392111, "latency_ms": {"p50_ms": 6.5, "p95_ms": 9.9}},
            {"variant": "feature_extraction:last", "score": 0.3633, "latency_ms": {"p50_ms": 3.3, "p95_ms": 4.0}},
            {"variant": "student", "score": 0.48, "latency_ms": None}]  # not timed: no p50 key
    _write(tmp_path / "evaluate/metrics.json", {
        "mean_score": 0.3, "pipeline": {"a": {"score": {"mean": 0.4}}}, "modes": rows,
        "modes_margin": {"adapters_minus_full": {"test": -0.069123, "validation": -0.01, "adapters_lr": 0.005,
                                                 "full_lr": 0.001}}})
    read = json.loads(headline.write("evaluate", params, root=tmp_path).read_text())
    assert read["modes"] == {"finetune": {"score": 0.4612, "p50_ms": 5.68},
                             "adapters": {"score": 0.3921, "p50_ms": 6.5},
                             "feature_extraction_last": {"score": 0.3633, "p50_ms": 3.3}, "student": {"score": 0.48}}
    assert read["adapters_minus_full"] == {"test": -0.0691, "validation": -0.01}
    # every key DVC and MLflow (on every OS) accept: no ':' (DVC's `file:key`), MLflow's characters
    keys = [".".join(k) for k in _paths(read)]
    assert all(re.fullmatch(r"[\w./ -]+", k) for k in keys), keys
    # without mode rows: neither key
    _write(tmp_path / "evaluate/metrics.json", {"mean_score": 0.3, "pipeline": {}, "modes": [], "modes_margin": {}})
    assert not {"modes", "adapters_minus_full"} & set(headline.headline("evaluate", params))


def _paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    return [p for k, v in d.items() for p in (_paths(v, (*prefix, k)) if isinstance(v, dict) else [(*prefix, k)])]


def test_a_missing_detail_file_is_named(tmp_path, params):
    with pytest.raises(BertopsError, match="finetune/metrics.json"):
        headline.write("finetune", params, root=tmp_path)


def test_dvc_yaml_declares_exactly_the_headline_files_as_metrics():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {name: [next(iter(m)) if isinstance(m, dict) else m for m in spec.get("metrics", [])]
                for name, spec in stages.items()}
    assert declared == {name: ([f"metrics/{name}.json"] if name in headline.HEADLINES else [])
                        for name in stages}
    for name in headline.HEADLINES:  # kept out of the DVC cache: git tracks them
        assert stages[name]["metrics"] == [{f"metrics/{name}.json": {"cache": False}}]


def test_bertops_stage_writes_the_headline_next_to_its_params_file(tmp_path, monkeypatch):
    # the project root, whatever the working directory (a test's or a user's)
    import types

    from bertops import cli

    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text())
    summary = {"success": True, "files": 1, "files_failed": 0, "records": 3, "failures": 0}
    stage = types.SimpleNamespace(main=lambda params: _write(project / "out/summary.json", summary) or {})
    monkeypatch.setitem(sys.modules, "bertops.stages.validate", stage)  # what the launcher imports by name
    monkeypatch.chdir(tmp_path)
    assert cli.main(["stage", "validate", "--params", str(project / "params.yaml"),
                     "-S", f"validate.out_dir={project / 'out'}"]) == 0
    assert json.loads((project / "metrics/validate.json").read_text()) == {**summary, "success": 1}
    assert not (tmp_path / "metrics").exists()
