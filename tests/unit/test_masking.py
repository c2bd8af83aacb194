"""The pretraining collator (dynamic 80/10/10 masking + pair padding) and the resumable batch sampler."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from bertops.text.masking import PretrainingCollator, SeededBatch
from bertops.train.pretrain_data import PretrainingBatchSampler
from tests.pretrain_helpers import tiny_pretraining_dataset, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _random_examples(tok, n: int, rng: random.Random, with_special_mask: bool = True) -> list[dict]:
    """Pair examples of random ordinary tokens and random lengths: [CLS] A [SEP] B [SEP]."""
    ordinary = [i for i in range(len(tok)) if i not in set(tok.all_special_ids)]
    out = []
    for _ in range(n):
        a, b = rng.randint(5, 60), rng.randint(5, 60)
        ids = [tok.cls_token_id] + rng.choices(ordinary, k=a) + [tok.sep_token_id] \
            + rng.choices(ordinary, k=b) + [tok.sep_token_id]
        ex = {"input_ids": ids, "token_type_ids": [0] * (a + 2) + [1] * (b + 1),
              "next_sentence_label": rng.randint(0, 1)}
        if with_special_mask:
            ex["special_tokens_mask"] = [1] + [0] * a + [1] + [0] * b + [1]
        out.append(ex)
    return out


@pytest.mark.parametrize("with_special_mask", [True, False])
def test_masking_proportions_and_labels(tok, with_special_mask):
    rng = random.Random(0)
    collate = PretrainingCollator(tok, seed=0)
    selected = ordinary = n_mask = n_kept = n_random = 0
    for _ in range(40):
        examples = _random_examples(tok, 32, rng, with_special_mask)
        batch = collate(examples)
        original = torch.full_like(batch["input_ids"], tok.pad_token_id)
        for i, e in enumerate(examples):
            original[i, :len(e["input_ids"])] = torch.tensor(e["input_ids"])
        special = torch.isin(original, torch.tensor(tok.all_special_ids))  # includes [PAD]
        labels, inputs = batch["labels"], batch["input_ids"]
        sel = labels != -100

        # labels hold the original token exactly where selected, -100 everywhere else
        assert torch.equal(labels[sel], original[sel])
        # never a special token or padding: neither selected nor altered
        assert not sel[special].any()
        assert torch.equal(inputs[special], original[special])
        # unselected ordinary tokens are untouched
        assert torch.equal(inputs[~sel], original[~sel])

        selected += int(sel.sum())
        ordinary += int((~special).sum())
        n_mask += int((inputs[sel] == tok.mask_token_id).sum())
        n_kept += int((inputs[sel] == original[sel]).sum())
        n_random += int(((inputs[sel] != tok.mask_token_id) & (inputs[sel] != original[sel])).sum())

    # ~40k ordinary tokens: binomial sd of the 15% rate is ~0.002, of the 80/10/10 split ~0.005
    assert selected / ordinary == pytest.approx(0.15, abs=0.01)
    assert n_mask / selected == pytest.approx(0.80, abs=0.025)
    assert n_random / selected == pytest.approx(0.10, abs=0.02)
    assert n_kept / selected == pytest.approx(0.10, abs=0.02)


def test_padding_and_pair_fields(tok):
    rng = random.Random(1)
    examples = _random_examples(tok, 5, rng)
    batch = PretrainingCollator(tok, pad_to_multiple_of=8, seed=1)(examples)
    longest = max(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["input_ids"].shape[1] >= longest
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        assert batch["token_type_ids"][i, :n].tolist() == e["token_type_ids"]
        assert not batch["token_type_ids"][i, n:].any()
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all()
    assert batch["next_sentence_label"].tolist() == [e["next_sentence_label"] for e in examples]

    fixed = PretrainingCollator(tok, pad_to_multiple_of=8, pad_to_length=130)(examples)
    assert fixed["input_ids"].shape == (5, 136)  # fixed length, rounded up to the multiple


def test_seeded_batches_are_reproducible(tok):
    examples = _random_examples(tok, 16, random.Random(2))
    collate = PretrainingCollator(tok)
    a, b = collate(SeededBatch(7, examples)), collate(SeededBatch(7, examples))
    c = collate(SeededBatch(8, examples))
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["labels"], c["labels"])


def test_whole_word_masking_masks_every_piece_of_a_word(tok):
    ds = tiny_pretraining_dataset(tok, n_train=200, n_val=1, seed=3)["train"]
    examples = [ds[i] for i in range(len(ds))]
    batch = PretrainingCollator(tok, whole_word_mask=True, mlm_probability=0.3, seed=0)(examples)
    cont = torch.tensor([t.startswith("##") for t in tok.convert_ids_to_tokens(list(range(len(tok))))])
    words_checked = 0
    for i, e in enumerate(examples):
        ids = torch.tensor(e["input_ids"])
        sel = (batch["labels"][i, :len(ids)] != -100)
        for j in range(1, len(ids)):
            if cont[ids[j]]:  # a "##" piece is selected exactly when the piece before it is
                assert sel[j] == sel[j - 1]
                words_checked += 1
        assert not sel[torch.tensor(e["special_tokens_mask"], dtype=torch.bool)].any()
    assert words_checked > 100 and (batch["labels"] != -100).any()


def test_sampler_epochs_ranks_and_resume():
    n, bs = 103, 8
    full = PretrainingBatchSampler(n, bs, seed=5, num_batches=30)
    batches = [[i for _, i in b] for b in full]
    assert len(batches) == len(full) == 30
    per_epoch = n // bs  # 12, the partial batch dropped
    for e in range(2):
        epoch = [i for b in batches[e * per_epoch:(e + 1) * per_epoch] for i in b]
        assert len(set(epoch)) == len(epoch) == per_epoch * bs  # no repeats inside an epoch
    assert batches[:per_epoch] != batches[per_epoch:2 * per_epoch]  # a new order each epoch

    # resuming at batch k yields exactly the rest of the stream, with the same masking seeds
    resumed = list(PretrainingBatchSampler(n, bs, seed=5, num_batches=30, start_batch=17))
    assert resumed == list(full)[17:]

    # ranks split every global batch without overlap
    r0 = list(PretrainingBatchSampler(n, 4, seed=5, num_batches=5, rank=0, world_size=2))
    r1 = list(PretrainingBatchSampler(n, 4, seed=5, num_batches=5, rank=1, world_size=2))
    for a, b in zip(r0, r1):
        assert not {i for _, i in a} & {i for _, i in b}

    # evaluation order: every example exactly once over the ranks
    ev = [i for r in range(3) for b in PretrainingBatchSampler(n, bs, 0, shuffle=False, rank=r, world_size=3)
          for _, i in b]
    assert sorted(ev) == list(range(n))
    assert np.unique([s for b in full for s, _ in b[:1]]).size == 30  # one masking seed per batch
