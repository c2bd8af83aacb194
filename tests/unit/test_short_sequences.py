"""Short sequences first: collated NSP pair batches cut to a shorter length (bertops.train.short_sequences)."""

from __future__ import annotations

import pytest
import torch

from bertops.train.short_sequences import shorten_pairs

CLS, SEP, PAD = 2, 3, 0


def _row(a: list[int], b: list[int], width: int, masked: dict[int, int]) -> dict[str, list[int]]:
    """[CLS] a [SEP] b [SEP] padded to width; `masked` maps token -> label (the token shown is 4)."""
    tokens = [CLS, *a, SEP, *b, SEP]
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    labels = [masked.get(t, -100) for t in tokens]
    ids = [4 if t in masked else t for t in tokens]
    pad = width - len(tokens)
    return {"input_ids": ids + [PAD] * pad, "token_type_ids": types + [0] * pad,
            "attention_mask": [1] * len(tokens) + [0] * pad, "labels": labels + [-100] * pad}


def _batch(*rows: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    batch = {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}
    batch["next_sentence_label"] = torch.arange(len(rows))
    return batch


def test_the_longer_segment_loses_its_end_and_labels_move_with_their_tokens():
    a, b = list(range(100, 120)), list(range(200, 205))  # A 20 tokens, B 5: only A is cut
    batch = _batch(_row(a, b, 32, masked={101: 101, 118: 118, 203: 203}),
                   _row(list(range(100, 110)), list(range(200, 212)), 32, masked={}),  # 10 + 12: both cut
                   _row([100, 101], [200], 32, masked={200: 200}))  # fits: unchanged
    out = shorten_pairs(batch, 16, PAD)

    assert out["input_ids"].shape == (3, 16)
    # row 0: 13 tokens of room, B keeps its 5, A its first 8; the masked 118 is cut out of the loss
    assert out["input_ids"][0].tolist() == [CLS, 100, 4, *range(102, 108), SEP, 200, 201, 202, 4, 204, SEP]
    assert out["labels"][0].tolist() == [-100, -100, 101] + [-100] * 10 + [203, -100, -100]
    assert out["token_type_ids"][0].tolist() == [0] * 10 + [1] * 6
    # row 1: 13 of 22; B is levelled to A, then loses on ties: A 7, B 6; both keep their start, so
    # the next-sentence label stays true
    assert out["input_ids"][1].tolist() == [CLS, *range(100, 107), SEP, *range(200, 206), SEP]
    assert out["attention_mask"][1].tolist() == [1] * 16
    assert out["token_type_ids"][1].tolist() == [0] * 9 + [1] * 7
    # row 2 keeps every token
    assert out["input_ids"][2].tolist() == [CLS, 100, 101, SEP, 4, SEP] + [PAD] * 10
    assert out["labels"][2].tolist() == [-100] * 4 + [200] + [-100] * 11
    assert out["next_sentence_label"].tolist() == [0, 1, 2]


def test_a_batch_that_already_fits_is_returned_as_is():
    batch = _batch(_row([100, 101], [200], 8, masked={}))
    assert shorten_pairs(batch, 16, PAD) is batch
    with pytest.raises(ValueError, match="at least 5"):
        shorten_pairs(_batch(_row([100] * 5, [200] * 5, 16, masked={})), 4, PAD)
