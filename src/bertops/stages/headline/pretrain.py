"""Headline of stage `pretrain`: held-out MLM/NSP quality, its baseline, the steps, tokens and seconds
reached (with a time budget, pretrain.max_time, they depend on the machine) and training speed."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Params
from bertops.stages.headline import read, rounded


def headline(params: Params) -> dict:
    m = read(Path(params.pretrain.out_dir) / "metrics.json")
    keys = ("mlm_accuracy", "nsp_accuracy", "mlm_loss", "baseline_mlm_most_frequent_token_accuracy",
            "global_step", "train_tokens", "train_tokens_per_s", "mfu")
    out = {k: rounded(m[k]) for k in keys if m.get(k) is not None}
    if m.get("train_seconds_total") is not None:
        out["train_seconds"] = round(m["train_seconds_total"], 1)
    if "train_tokens_per_s" in out:
        out["train_tokens_per_s"] = round(out["train_tokens_per_s"])
    return out
