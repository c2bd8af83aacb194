"""Stage `finetune`: multi-task fine-tuning of the pretrained encoder (params `finetune:`).

Inputs: finetune.init_dir (default artifacts/pretrain/model; "minilm" for the packaged MiniLM),
the task files named under `tasks:`. Outputs under finetune.out_dir (artifacts/finetune):
model/ (a MultiTaskModel dir; in single_task mode one per task, model/<task>/, and a manifest),
metrics.json (per-task metrics of the kept epoch on the selection examples and their mean
`score`, per-epoch history, and `gate`: the kept model's scores on the gate examples, which the
registry gate compares), logs/metrics.csv (Lightning CSV log).
"""

from __future__ import annotations

from pathlib import Path

from bertops import tracking
from bertops.config import Params
from bertops.io import write_json


def main(params: Params) -> dict:
    from bertops.config_tasks import check_tasks
    from bertops.train.finetune import fit_multitask, resolve_init_dir

    check_tasks(params)
    ft = params.finetune
    out_dir = Path(ft.out_dir)
    tasks = list(ft.tasks) or list(params.tasks)
    section = {**ft.model_dump(), "task_params": {t: params.tasks[t].model_dump() for t in tasks
                                                  if t in params.tasks}}
    with tracking.stage_run("finetune", section):
        result = fit_multitask(params, resolve_init_dir(ft.init_dir), out_dir, params.seed,
                               random_init=ft.random_init, tasks=tasks,
                               loggers=tracking.lightning_loggers(out_dir))
        metrics = {"score": result["score"], "gate": result["gate"], "mode": result["mode"],
                   "init_dir": str(ft.init_dir), "random_init": ft.random_init, "tasks": result["metrics"],
                   "best_epoch": result["best_epoch"], "history": result["history"],
                   "train_examples": result["train_examples"],
                   "validation_examples": result["validation_examples"],
                   "steps": result["steps"], "precision": result["precision"],
                   "model_dirs": result["model_dirs"],
                   # trainable parameters (% of the encoder) and bytes stored, per task (train/adapters.py)
                   "costs": result["costs"]}
        # wall time goes to MLflow only, so metrics.json is the same bytes on a seeded rerun
        write_json(out_dir / "metrics.json", metrics)
        tracking.log_metrics({"val": {"score": result["score"], **result["metrics"]},
                              "gate": {"score": result["gate"]["score"], **result["gate"]["tasks"]},
                              "wall_s": result["wall_s"]})
        tracking.log_artifact(out_dir / "metrics.json", "finetune")
    return {"model_dir": result["model_dir"], "model_dirs": result["model_dirs"],
            "metrics": str(out_dir / "metrics.json"), "score": result["score"],
            "gate_score": result["gate"]["score"],
            "tasks": {t: m["score"] for t, m in result["metrics"].items()}, "wall_s": result["wall_s"]}
