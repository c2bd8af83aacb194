"""Decreasing masking (pretrain.mlm_probability_final): the rate's schedule, and the thinning of a
collated batch's MLM selection down to it."""

from __future__ import annotations

import pytest
import torch

from bertops.config import load_params
from bertops.train.masking_schedule import masking_rate, thin_masking

MASK = 4


def _masked_batch(n: int = 400, length: int = 64, rate: float = 0.3, seed: int = 0):
    """Tokens 10..99; `rate` of them selected, 80% -> [MASK], 10% random, 10% kept (the collator's rule)."""
    g = torch.Generator().manual_seed(seed)
    original = torch.randint(10, 100, (n, length), generator=g)
    selected = torch.rand(n, length, generator=g) < rate
    kind = torch.rand(n, length, generator=g)
    ids = torch.where(selected & (kind < 0.8), torch.full_like(original, MASK), original)
    ids = torch.where(selected & (kind >= 0.8) & (kind < 0.9), torch.randint(10, 100, (n, length), generator=g), ids)
    labels = original.masked_fill(~selected, -100)
    return original, {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}


def test_masking_rate_falls_linearly_over_the_budget():
    assert masking_rate(0.0, 0.3, 0.15) == pytest.approx(0.3)
    assert masking_rate(0.5, 0.3, 0.15) == pytest.approx(0.225)
    assert masking_rate(1.0, 0.3, 0.15) == masking_rate(1.7, 0.3, 0.15) == pytest.approx(0.15)


def test_thinning_reaches_the_rate_and_keeps_the_80_10_10_split():
    original, batch = _masked_batch()
    out = thin_masking(batch, 0.5, torch.Generator().manual_seed(1))
    sel_before, sel_after = batch["labels"] != -100, out["labels"] != -100
    assert (sel_after & ~sel_before).sum() == 0  # nothing newly selected
    assert sel_after.float().mean().item() == pytest.approx(0.15, abs=0.005)
    # unselected positions carry their original token again; kept ones are exactly as the collator made them
    assert torch.equal(out["input_ids"][~sel_after], original[~sel_after])
    assert torch.equal(out["input_ids"][sel_after], batch["input_ids"][sel_after])
    assert torch.equal(out["labels"][sel_after], original[sel_after])
    assert (out["input_ids"][sel_after] == MASK).float().mean().item() == pytest.approx(0.8, abs=0.02)
    # the same generator seed, the same draw (what a resumed run relies on); keep 1.0: the batch as is
    again = thin_masking(batch, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(again["labels"], out["labels"])
    assert thin_masking(batch, 1.0, torch.Generator()) is batch


def test_the_schedule_only_decreases():
    params = load_params("params.yaml", {"pretrain.mlm_probability_final": 0.15})
    assert params.pretrain.mlm_probability_final == 0.15
    with pytest.raises(ValueError, match="only decreases"):
        load_params("params.yaml", {"pretrain.mlm_probability": 0.15, "pretrain.mlm_probability_final": 0.3})
