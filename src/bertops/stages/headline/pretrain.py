"""Headline of stage `pretrain`: held-out MLM/NSP quality, its baseline, steps and training speed."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Params
from bertops.stages.headline import read, rounded


def headline(params: Params) -> dict:
    m = read(Path(params.pretrain.out_dir) / "metrics.json")
    keys = ("mlm_accuracy", "nsp_accuracy", "mlm_loss", "baseline_mlm_most_frequent_token_accuracy",
            "global_step", "train_tokens_per_s", "mfu")
    out = {k: rounded(m[k]) for k in keys if m.get(k) is not None}
    if "train_tokens_per_s" in out:
        out["train_tokens_per_s"] = round(out["train_tokens_per_s"])
    return out
