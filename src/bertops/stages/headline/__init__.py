"""Headline metrics: the few numbers per stage that `dvc exp show` and `dvc metrics diff` compare.

Each stage writes its full detail under artifacts/ (a DVC output, git-ignored). After a stage
succeeds, `bertops stage NAME` writes metrics/NAME.json: a handful of numbers taken from that
detail. metrics/ is tracked by git (dvc.yaml declares these files as `metrics`, cache: false),
so every commit and every experiment carries them and `dvc metrics diff main` has a baseline.

One function per stage, below: what it returns is exactly what the comparison shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertops.config import Params
from bertops.errors import BertopsError
from bertops.io import write_json

METRICS_DIR = Path("metrics")


def _read(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BertopsError(f"headline metrics: {path} is missing (the stage should have written it)") from None


def _round(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def validate(params: Params) -> dict:
    s = _read(Path(params.validate_.out_dir) / "summary.json")
    return {"success": int(bool(s["success"])), "files": s["files"], "files_failed": s["files_failed"],
            "records": s["records"], "failures": s["failures"]}


def tokenize(params: Params) -> dict:
    s = _read(params.pretraining_data.stats_path)
    return {"vocab_size": s["vocab_size"], "train_examples": s["splits"]["train"]["examples"],
            "validation_examples": s["splits"]["validation"]["examples"], "tokens": s["total"]["tokens"],
            "tokens_per_s": round(s["tokens_per_s"])}


def pretrain(params: Params) -> dict:
    m = _read(Path(params.pretrain.out_dir) / "metrics.json")
    keys = ("mlm_accuracy", "nsp_accuracy", "mlm_loss", "baseline_mlm_most_frequent_token_accuracy",
            "global_step", "train_tokens_per_s", "mfu")
    out = {k: _round(m[k]) for k in keys if m.get(k) is not None}
    if "train_tokens_per_s" in out:
        out["train_tokens_per_s"] = round(out["train_tokens_per_s"])
    return out


def finetune(params: Params) -> dict:
    m = _read(Path(params.finetune.out_dir) / "metrics.json")
    return {"gate_score": _round(m["gate"]["score"]), "selection_score": _round(m["score"]),
            "gate": {t: _round(v["score"]) for t, v in m["gate"]["tasks"].items()}, "steps": m["steps"]}


def evaluate(params: Params) -> dict:
    m = _read(Path(params.evaluate.out_dir) / "metrics.json")
    pipeline = {k: v for k, v in m["pipeline"].items() if isinstance(v, dict) and "score" in v}
    out = {"test_score": _round(m["mean_score"]),
           "test": {t: _round(v["score"]["mean"]) for t, v in pipeline.items()}}
    for baseline in ("majority", "random_init", "pretrained", "minilm"):
        if baseline in m:
            out[f"{baseline}_test_score"] = _round(m[baseline]["mean_score"]["mean"])
    return out


HEADLINES: dict[str, Callable[[Params], dict]] = {
    "validate": validate, "tokenize": tokenize, "pretrain": pretrain, "finetune": finetune, "evaluate": evaluate,
}


def write(stage: str, params: Params, root: str | Path = ".") -> Path | None:
    """Write metrics/<stage>.json from the stage's detail output (None for a stage without one)."""
    headline = HEADLINES.get(stage)
    if headline is None:
        return None
    return write_json(Path(root) / METRICS_DIR / f"{stage}.json", headline(params))
