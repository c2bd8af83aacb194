"""Headline of stage `tokenize`: vocabulary, example and token counts, and the speed."""

from __future__ import annotations

from bertops.config import Params
from bertops.stages.headline import read


def headline(params: Params) -> dict:
    s = read(params.pretraining_data.stats_path)
    return {"vocab_size": s["vocab_size"], "train_examples": s["splits"]["train"]["examples"],
            "validation_examples": s["splits"]["validation"]["examples"], "tokens": s["total"]["tokens"],
            "tokens_per_s": round(s["tokens_per_s"])}
