"""Headline of stage `distill`: the student's gate and selection scores, its size against the teacher's."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Params
from bertops.stages.headline import read, rounded


def headline(params: Params) -> dict:
    m = read(Path(params.distill.out_dir) / "metrics.json")
    return {"gate_score": rounded(m["gate"]["score"]), "selection_score": rounded(m["score"]),
            "student_params": m["student"]["encoder_params"], "teacher_params": m["teacher_params"],
            "steps": m["steps"]}
