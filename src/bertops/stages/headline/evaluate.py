"""Headline of stage `evaluate`: the test score (per task too), the baselines' means, each
encoder's fine-tuning rate chosen on validation, and the pretrained-vs-random-init verdict counts."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Params
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
    v = m.get("verdict") or {}
    if v:
        out["pretrained_vs_random"] = {"wins": v["wins"], "ties": v["ties"], "losses": v["losses"],
                                       "mean_difference": rounded(v["mean_score"]["difference"]),
                                       "mean_ci_low": rounded(v["mean_score"]["ci_low"]),
                                       "mean_ci_high": rounded(v["mean_score"]["ci_high"])}
    return out
