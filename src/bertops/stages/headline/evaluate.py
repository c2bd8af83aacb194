"""Headline of stage `evaluate`: the test score (per task too) and the baselines' means."""

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
    return out
