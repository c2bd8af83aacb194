"""Decreasing masking: the MLM masking rate falls linearly over the budget (Ankner et al. 2023, 30% -> 15%).

A high rate early gives more predictions per step while the model learns little from each; a lower
rate late gives each prediction more context. The rate follows the budget's progress (steps or training
time, as the lr schedule and the short-sequence phase do), which only the training process knows, so
the collator (possibly in DataLoader workers) masks at the starting rate and the training process
thins its selection on the device: each selected position stays selected with probability
rate / starting rate, so a position is selected with probability `rate` and the 80/10/10 split of the
kept ones is unchanged. Written here because the stock collator's rate is fixed per instance.
"""

from __future__ import annotations

import torch


def masking_rate(progress: float, start: float, final: float) -> float:
    """The masking rate after `progress` (0..1) of the budget: linear from `start` to `final`."""
    return start + (final - start) * min(max(progress, 0.0), 1.0)


def thin_masking(batch: dict[str, torch.Tensor], keep_prob: float, generator: torch.Generator
                 ) -> dict[str, torch.Tensor]:
    """Unselect each MLM-selected position of a collated batch with probability 1 - keep_prob: its
    original token (held in `labels`) goes back into `input_ids` and it leaves the loss (-100)."""
    if keep_prob >= 1.0:
        return batch
    labels = batch["labels"]
    draw = torch.rand(labels.shape, generator=generator, device=generator.device)
    drop = (labels != -100) & (draw.to(labels.device) >= keep_prob)
    return {**batch, "input_ids": torch.where(drop, labels, batch["input_ids"]),
            "labels": labels.masked_fill(drop, -100)}
