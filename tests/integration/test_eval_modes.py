"""The evaluate stage's rows comparing ways to adapt our encoder (evaluate.modes: full fine-tuning,
adapters, frozen features) and the distill stage's student, really fine-tuned on the real task data
with a tiny encoder: every variant fitted before the test split is read, each row's test score,
trainable % and bytes per task and its batch-1 CPU latency, measured on the row's own model, in
metrics.json and the report."""

import json
from pathlib import Path

import pytest

from bertops.config import load_params
from tests.integration.test_evaluate import TASKS, _repo_params, _tiny_encoder


@pytest.mark.slow
def test_evaluate_rows_full_adapters_frozen(tmp_path, real_data_dir, monkeypatch):
    from bertops.data import tasks as T
    from bertops.stages import evaluate
    from bertops.train import finetune

    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    monkeypatch.chdir(tmp_path)
    encoder = _tiny_encoder(tmp_path / "pretrain" / "model", real_data_dir)
    overrides = {f"tasks.{t}.path": str(real_data_dir / "tasks" / t) for t in TASKS}
    overrides.update({
        "seed": 11, "finetune.init_dir": str(encoder), "finetune.out_dir": str(tmp_path / "finetune"),
        "finetune.mode": "finetune", "finetune.tasks": TASKS,
        "finetune.max_train_examples_per_task": 32, "finetune.max_eval_examples_per_task": 16,
        "finetune.batch_size": 16, "finetune.max_epochs": 1, "finetune.steps_per_epoch": 6,
        "evaluate.out_dir": str(tmp_path / "evaluate"), "evaluate.model_dir": str(tmp_path / "finetune" / "model"),
        "evaluate.pretrain_dir": str(encoder), "evaluate.seeds": [11], "evaluate.baselines": ["majority"],
        "evaluate.max_test_examples_per_task": 24, "evaluate.lr_grid": [], "evaluate.adapters_lr_grid": [],
        "evaluate.frozen_lr_grid": [],
        "evaluate.latency_requests": 10, "evaluate.jobs": 1,  # fits in this process, where the spies see them
        "evaluate.modes": ["finetune", "adapters", "feature_extraction:last", "student"],
        "distill.out_dir": str(tmp_path / "distill"), "distill.teacher_dir": str(tmp_path / "finetune" / "model"),
    })
    params = load_params(_repo_params(), overrides)
    finetune.fit_multitask(params, str(encoder), tmp_path / "finetune", params.seed)
    from bertops.stages import distill

    distill.main(params)  # the student (as many layers as this 1-layer teacher)

    events, real_load, real_fit = [], T.load_records, finetune.fit_multitask

    def load_records(tp, split, name="task"):
        events.append(("read", split))
        return real_load(tp, split, name)

    def fit_spy(p, *args, **kw):
        events.append(("fit", p.finetune.mode))
        return real_fit(p, *args, **kw)

    monkeypatch.setattr(T, "load_records", load_records)
    monkeypatch.setattr(evaluate, "load_records", load_records)
    monkeypatch.setattr(finetune, "fit_multitask", fit_spy)
    from bertops.evaluate import latency
    from bertops.model.multitask import CONFIG_NAME

    timed, real_measure = [], latency.measure

    def measure_spy(dirs, reqs, *args):  # what each row's latency was measured on
        configs = {t: json.loads((Path(d) / CONFIG_NAME).read_text()) for t, d in dirs.items()}
        timed.append((sorted({str(d) for d in dirs.values()}), configs, [t for t, _ in reqs]))
        return real_measure(dirs, reqs, *args)

    monkeypatch.setattr(latency, "measure", measure_spy)
    evaluate.main(params)

    # each row fitted once (full fine-tuning last: it waits for the encoder's rate, here without a grid)
    assert [e[1] for e in events if e[0] == "fit"] == ["adapters", "feature_extraction", "finetune"]
    first_test = events.index(("read", "test"))
    assert max(i for i, e in enumerate(events) if e[0] == "fit") < first_test  # fitted before test is read

    m = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    rows = {r["variant"]: r for r in m["modes"]}
    assert list(rows) == ["finetune", "adapters", "feature_extraction:last", "student"]
    full, lora, frozen = rows["finetune"], rows["adapters"], rows["feature_extraction:last"]
    for r in rows.values():
        assert set(r["tasks"]) == set(TASKS) and r["score"] == pytest.approx(sum(r["tasks"].values()) / len(TASKS))
    # full: the whole encoder per task; adapters: a LoRA adapter + head; frozen: a head (+ pooler)
    assert full["trainable_pct"] > 100 > lora["trainable_pct"] > frozen["trainable_pct"] > 0
    assert full["bytes_per_task"] > lora["bytes_per_task"] > frozen["bytes_per_task"] > 0
    student = json.loads((tmp_path / "distill" / "metrics.json").read_text())  # % of the teacher's encoder
    assert rows["student"]["trainable_pct"] == pytest.approx(
        100 * student["costs"]["tasks"]["wic"]["trainable_params"] / student["teacher_params"], abs=0.5)
    assert (tmp_path / "distill" / "model" / "config.json").exists()  # evaluate leaves the stage's output
    # latency: positive, one per row, each on its own model (full: trainable encoder; adapters:
    # LoRA config; frozen: frozen encoder; student: the distill stage's model), the same requests
    for r in rows.values():
        lat = r["latency_ms"]
        assert lat["requests"] == 10 and 0 < lat["p50_ms"] <= lat["p95_ms"] < 10_000, (r["variant"], lat)
    assert len(timed) == 4 and len({tuple(d) for d, _, _ in timed}) == 4
    assert all(t[2] == timed[0][2] for t in timed) and set(timed[0][2]) == set(TASKS)
    (full_cfg, lora_cfg, frozen_cfg, student_cfg) = [next(iter(c.values())) for _, c, _ in timed]
    assert not full_cfg["freeze_encoder"] and full_cfg["adapters"] is None
    assert lora_cfg["adapters"] is not None and frozen_cfg["freeze_encoder"]
    assert timed[3][0] == [str(tmp_path / "distill" / "model")]
    assert m["modes_latency"]["requests"] == 10 and m["modes_latency"]["loadavg_1m"] >= 0
    assert m["modes_margin"]["adapters_minus_full"]["test"] == pytest.approx(lora["score"] - full["score"])
    report = (tmp_path / "evaluate" / "report.md").read_text()
    assert "| p50 ms | p95 ms |" in report and "batch 1, 10 requests" in report
    assert "| adapters (LoRA per task) |" in report and "| frozen features (last) |" in report
    assert "| distilled student |" in report
