"""Headline of stage `evaluate`: the test score (per task too), the baselines' means, each
encoder's fine-tuning rate chosen on validation (and each task's, with evaluate.lr_choice task), the
pretrained-vs-random-init verdict counts, and the rows comparing ways to adapt the encoder
(evaluate.modes): each row's test score and batch-1 p50 latency under bertops.evaluate.modes.metric_name
("feature_extraction:last" -> "feature_extraction_last") and the adapters-minus-full-fine-tuning margin
on test and validation. The latency is measured on the machine that ran the stage: it differs between
runs, the rest does not."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Params
from bertops.evaluate import modes
from bertops.stages.headline import read, rounded


def headline(params: Params) -> dict:
    m = read(Path(params.evaluate.out_dir) / "metrics.json")
    pipeline = {k: v for k, v in m["pipeline"].items() if isinstance(v, dict) and "score" in v}
    out = {"test_score": rounded(m["mean_score"]),
           "test": {t: rounded(v["score"]["mean"]) for t, v in pipeline.items()}}
    for baseline in ("majority", "random_init", "pretrained", "minilm"):
        if baseline in m:
            out[f"{baseline}_test_score"] = rounded(m[baseline]["mean_score"]["mean"])
    if any(c.get("grid") for c in m.get("lr_selection", {}).values()):
        out["lr"] = {name: c["chosen"] for name, c in m["lr_selection"].items()}
        tasks = {name: {t: g["lr"] for t, g in c["tasks"].items()} for name, c in m["lr_selection"].items()
                 if c.get("tasks")}
        if tasks:
            out["lr_tasks"] = tasks  # evaluate.lr_choice task: each task's rate per encoder
    if m.get("modes"):
        out["modes"] = {name: {k: rounded(x, 2 if k == "p50_ms" else 4) for k, x in row.items()}
                        for name, row in modes.row_metrics(m["modes"]).items()}
    margin = (m.get("modes_margin") or {}).get("adapters_minus_full")
    if margin:
        out["adapters_minus_full"] = {"test": rounded(margin["test"]), "validation": rounded(margin["validation"])}
    v = m.get("verdict") or {}
    if v:
        out["pretrained_vs_random"] = {"wins": v["wins"], "ties": v["ties"], "losses": v["losses"],
                                       "mean_difference": rounded(v["mean_score"]["difference"]),
                                       "mean_ci_low": rounded(v["mean_score"]["ci_low"]),
                                       "mean_ci_high": rounded(v["mean_score"]["ci_high"])}
    return out
