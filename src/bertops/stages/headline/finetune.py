"""Headline of stage `finetune`: the gate score (per task too), the selection score and the steps."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Params
from bertops.stages.headline import read, rounded


def headline(params: Params) -> dict:
    m = read(Path(params.finetune.out_dir) / "metrics.json")
    return {"gate_score": rounded(m["gate"]["score"]), "selection_score": rounded(m["score"]),
            "gate": {t: rounded(v["score"]) for t, v in m["gate"]["tasks"].items()}, "steps": m["steps"]}
