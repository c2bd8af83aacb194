"""register with a distilled student: the student is logged and registered as its own MLflow model
(register.student_model_name) with the same gate, the lineage tags plus what it was distilled from,
a model card saying so, and it loads from the registry by alias and answers."""

from __future__ import annotations

import json

import pytest

from bertops.config import load_params
from tests.helpers import REPO
from tests.integration.test_served_model import build_served_model


@pytest.mark.slow
def test_register_logs_the_student_as_its_own_model(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    import pandas as pd

    from bertops.io import write_json
    from bertops.stages import register
    from bertops.train.distill import build_student

    root = tmp_path / "project"
    teacher = build_served_model(tmp_path / "teacher")
    teacher.save_pretrained(root / "artifacts/finetune/model")
    student = build_student(teacher)
    student.save_pretrained(root / "artifacts/distill/model")
    write_json(root / "artifacts/validation/summary.json", {"success": True})
    write_json(root / "artifacts/finetune/metrics.json", {"gate": {"score": 0.5}})
    write_json(root / "artifacts/evaluate/metrics.json", {})
    write_json(root / "artifacts/distill/metrics.json", {
        "gate": {"score": 0.4}, "teacher_dir": "artifacts/finetune/model", "teacher_params": 1_000_000,
        "student": {"num_hidden_layers": 1, "hidden_size": 32, "encoder_params": 500_000},
        "temperature": 2.0, "alpha": 0.5})
    monkeypatch.setenv("BERTOPS_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(root)
    params = load_params(REPO / "params.yaml")

    result = register.main(params, root=root)

    s = result["student"]
    assert s["model_name"] == "bertops-student" and s["alias"] == "champion" and s["gate_value"] == 0.4
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias("bertops-student", "champion")
    assert mv.tags["bertops.distilled_from"] == f"bertops version {result['version']}"
    assert mv.tags["bertops.gate_value"] == "0.400000"
    assert mv.tags["bertops.params_hash"] == result["tags"]["bertops.params_hash"]  # the same lineage
    assert "Distilled from `bertops version 1`" in mv.description and "1 layers of 32" in mv.description
    model = mlflow.pyfunc.load_model("models:/bertops-student@champion")
    out = model.predict(pd.DataFrame([{"task": "sentiment", "text": "A warm film.", "text_pair": None}]))
    assert out["prediction"][0] in ("neg", "pos") and 0 <= out["score"][0] <= 1
    assert json.loads((root / "artifacts/register/result.json").read_text())["student"]["version"] in (1, "1")
