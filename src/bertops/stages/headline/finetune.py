"""Headline of stage `finetune`: the gate score (per task too), the selection score, the steps, and
the mean trainable parameters (% of the encoder) and bytes stored per task."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Params
from bertops.stages.headline import read, rounded


def headline(params: Params) -> dict:
    m = read(Path(params.finetune.out_dir) / "metrics.json")
    out = {"gate_score": rounded(m["gate"]["score"]), "selection_score": rounded(m["score"]),
           "gate": {t: rounded(v["score"]) for t, v in m["gate"]["tasks"].items()}, "steps": m["steps"]}
    if "costs" in m:  # what one task trains and stores (mean over tasks): finetune.mode's cost
        out.update(trainable_pct=rounded(m["costs"]["trainable_pct"]), bytes_per_task=m["costs"]["bytes_per_task"])
    return out
