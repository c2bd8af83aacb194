"""Stage `distill`: a smaller student of the fine-tuned multi-task model (params `distill:`; the
budget, sampler and validation split of `finetune:`). See bertops.train.distill.

Inputs: distill.teacher_dir (default the finetune stage's model), the task files of its tasks
(train and validation splits; the test split stays unseen). Outputs under distill.out_dir
(artifacts/distill): model/ (a MultiTaskModel dir, served like the teacher), metrics.json (as the
finetune stage's: selection and gate scores, history, costs; plus the teacher and the student's
size), logs/metrics.csv.
"""

from __future__ import annotations

from pathlib import Path

from bertops import tracking
from bertops.config import Params
from bertops.io import write_json


def main(params: Params) -> dict:
    from bertops.config_tasks import check_tasks
    from bertops.train.distill import fit_distill

    check_tasks(params)
    dp = params.distill
    out_dir = Path(dp.out_dir)
    with tracking.stage_run("distill", {**dp.model_dump(), "finetune": params.finetune.model_dump()}):
        result = fit_distill(params, dp.teacher_dir, out_dir, params.seed, loggers=tracking.lightning_loggers(out_dir))
        metrics = {"score": result["score"], "gate": result["gate"], "teacher_dir": result["teacher_dir"],
                   "teacher_params": result["teacher_params"], "student": result["student"],
                   "temperature": dp.temperature, "alpha": dp.alpha, "hidden_weight": dp.hidden_weight,
                   "tasks": result["metrics"],
                   "best_epoch": result["best_epoch"], "history": result["history"],
                   "train_examples": result["train_examples"], "validation_examples": result["validation_examples"],
                   "steps": result["steps"], "precision": result["precision"], "costs": result["costs"]}
        write_json(out_dir / "metrics.json", metrics)  # wall time to MLflow only: same bytes on a rerun
        tracking.log_metrics({"val": {"score": result["score"]}, "gate": {"score": result["gate"]["score"]},
                              "wall_s": result["wall_s"]})
        tracking.log_artifact(out_dir / "metrics.json", "distill")
    return {"model_dir": result["model_dir"], "metrics": str(out_dir / "metrics.json"),
            "score": result["score"], "gate_score": result["gate"]["score"], "wall_s": result["wall_s"]}
