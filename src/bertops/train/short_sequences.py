"""Short sequences first: NSP pair batches cut to `short_seq_length` for the early part of pretraining.

The BERT paper pretrained 90% of its steps at 128 tokens and the rest at 512. Here it is what gets a
small budget past the MLM plateau: until a neighbour-attending head forms, every head attends about
uniformly, so the gradient that would pull attention toward the next token is ~1/n of it. At 64
tokens the tiny preset's held-out MLM loss dropped after ~3,500 steps; at 128, after ~12,500
(docs/pretraining-recipe.md, "Short sequences first"). The last part of the budget runs at the
full length, so every position embedding the tasks use is trained.

Written here, not in the collator: the phase follows the budget's progress (steps *and* training
time, as the lr schedule does), which only the training process knows; DataLoader workers do not.
No library offers a batch-level pair truncation.
"""

from __future__ import annotations

import torch


def shorten_pairs(batch: dict[str, torch.Tensor], max_length: int, pad_token_id: int = 0
                  ) -> dict[str, torch.Tensor]:
    """Cut each `[CLS] A [SEP] B [SEP]` row of a collated (already masked) batch to `max_length`.

    The longer segment loses tokens from its end first, B on ties: the counts of
    bertops.text.pretraining_data.truncate_seq_pair (Google's pair rule), here for a whole batch of
    tensors on the device and without its random front/back choice; both segments keep their start,
    so the next-sentence label stays true. MLM labels move with their tokens; a dropped masked token
    drops out of the loss. Rows that already fit keep every token.
    """
    ids, types, attn = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    if ids.shape[1] <= max_length:
        return batch
    if max_length < 5:
        raise ValueError(f"short_seq_length {max_length}: a pair needs at least 5 positions")
    real = attn.bool()
    len_a = (real & (types == 0)).sum(1) - 2  # minus [CLS] and the first [SEP]
    len_b = (real & (types == 1)).sum(1) - 1  # minus the last [SEP]
    room = max_length - 3
    keep_b = torch.minimum(len_b, torch.clamp(room - len_a, min=room // 2))
    keep_a = torch.minimum(len_a, room - keep_b)
    kept = keep_a + keep_b + 3

    j = torch.arange(max_length, device=ids.device).expand(ids.shape[0], -1)
    ka, kb, la, lb = (t[:, None] for t in (keep_a, keep_b, len_a, len_b))
    # where output position j reads from: [CLS] + kept A, the first [SEP], kept B, the last [SEP]
    src = (la + lb + 2).expand_as(j)
    src = torch.where(j <= ka + 1 + kb, j - ka + la, src)
    src = torch.where(j == ka + 1, la + 1, src)
    src = torch.where(j <= ka, j, src)
    pad = j >= kept[:, None]
    src = src.masked_fill(pad, 0)

    # Always max_length wide (one shape per phase, for torch.compile); most rows fill it anyway.
    out = dict(batch)
    for key, value in batch.items():
        if value.dim() == 2 and value.shape == ids.shape:
            fill = {"input_ids": pad_token_id, "labels": -100}.get(key, 0)
            out[key] = value.gather(1, src).masked_fill(pad, fill)
    return out
