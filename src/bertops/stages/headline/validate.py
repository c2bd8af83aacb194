"""Headline of stage `validate`: whether the data passed, and how much was checked."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Params
from bertops.stages.headline import read


def headline(params: Params) -> dict:
    s = read(Path(params.validate_.out_dir) / "summary.json")
    return {"success": int(bool(s["success"])), "files": s["files"], "files_failed": s["files_failed"],
            "records": s["records"], "failures": s["failures"]}
