"""Dynamic masking for BERT pretraining: a new 15% of the tokens masked every time a batch is made.

The masking itself is Hugging Face's `DataCollatorForLanguageModeling` (80% [MASK], 10% random
token, 10% kept; optional whole-word masking). This wrapper adds what a pretraining *pair* batch
needs and the stock collator does not do: padding of token_type_ids and attention_mask next to
input_ids, passing next_sentence_label through, an optional fixed length (static shapes for
torch.compile), and a per-batch seed so a resumed run masks batch k exactly as the first run did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from bertops.errors import BertopsError

if TYPE_CHECKING:
    import torch


class SeededBatch(NamedTuple):
    """Examples of one batch plus the seed its masking must use (see PretrainingBatchSampler)."""

    seed: int
    examples: list[dict]


class PretrainingCollator:
    """Pad a list of pretraining examples and mask them for MLM.

    Examples are dicts with `input_ids` ("[CLS] A [SEP] B [SEP]"), `token_type_ids`, optional
    `next_sentence_label` and optional `special_tokens_mask`. Returns tensors: input_ids,
    token_type_ids, attention_mask, labels (-100 except at the selected positions, which hold
    the original token) and next_sentence_label. Special tokens and padding are never selected.

    Called with a `SeededBatch`, masking uses a generator seeded with its seed (reproducible per
    batch, whatever process or worker builds it); with a plain list it uses one generator seeded
    with `seed` (or torch's global RNG when `seed` is None), as the stock collator does.
    """

    def __init__(self, tokenizer: Any, mlm_probability: float = 0.15, mask_replace_prob: float = 0.8,
                 random_replace_prob: float = 0.1, whole_word_mask: bool = False,
                 pad_to_multiple_of: int | None = 8, pad_to_length: int | None = None,
                 seed: int | None = None):
        import torch
        from transformers import DataCollatorForLanguageModeling

        if tokenizer.pad_token_id is None or tokenizer.mask_token_id is None:
            raise BertopsError("the tokenizer needs [PAD] and [MASK] tokens for MLM pretraining")
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_to_length = pad_to_length
        self.whole_word_mask = whole_word_mask
        self._mlm = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, whole_word_mask=whole_word_mask, mlm_probability=mlm_probability,
            mask_replace_prob=mask_replace_prob, random_replace_prob=random_replace_prob,
            return_tensors="pt")
        self._special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._is_continuation = None
        if whole_word_mask:
            # The pretraining data has ids only, no offset_mapping; WordPiece marks word-internal
            # pieces with "##", which is all the stock whole-word masking needs to know.
            tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            self._is_continuation = torch.tensor([t.startswith("##") for t in tokens], dtype=torch.long)

    def _padded_length(self, longest: int) -> int:
        length = longest
        if self.pad_to_length is not None:
            if longest > self.pad_to_length:
                raise BertopsError(f"an example has {longest} tokens, more than pad_to_length "
                                   f"{self.pad_to_length}")
            length = self.pad_to_length
        m = self.pad_to_multiple_of
        if m:
            length = (length + m - 1) // m * m
        return length

    def _offsets(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Synthetic character offsets in which a "##" piece starts where the previous piece ends
        (same word) and any other token starts one character later (new word)."""
        import torch

        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        cont = self._is_continuation[input_ids]
        return torch.stack([2 * positions - cont, 2 * positions + 1], dim=-1)

    def __call__(self, batch: SeededBatch | Sequence[dict]) -> dict[str, torch.Tensor]:
        import torch

        generator = self._generator
        if isinstance(batch, SeededBatch):
            generator = torch.Generator().manual_seed(batch.seed)
            examples = batch.examples
        else:
            examples = list(batch)
        n, length = len(examples), self._padded_length(max(len(e["input_ids"]) for e in examples))
        input_ids = torch.full((n, length), self.tokenizer.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((n, length), dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        special = torch.ones((n, length), dtype=torch.long)  # padding counts as special: never masked
        have_special = all("special_tokens_mask" in e for e in examples)
        for i, e in enumerate(examples):
            k = len(e["input_ids"])
            input_ids[i, :k] = torch.as_tensor(e["input_ids"])
            if e.get("token_type_ids") is not None:
                token_type_ids[i, :k] = torch.as_tensor(e["token_type_ids"])
            attention_mask[i, :k] = 1
            if have_special:
                special[i, :k] = torch.as_tensor(e["special_tokens_mask"])
        if not have_special:
            special = (torch.isin(input_ids, self._special_ids) | (attention_mask == 0)).long()

        offsets = self._offsets(input_ids) if self.whole_word_mask else None
        # The stock collator reads its generator from this attribute (it is None = global RNG
        # unless a seed was given); setting it per batch is what makes masking resumable.
        self._mlm.generator = generator
        input_ids, labels = self._mlm.torch_mask_tokens(
            input_ids, special_tokens_mask=special, offset_mapping=offsets)
        out = {"input_ids": input_ids, "token_type_ids": token_type_ids,
               "attention_mask": attention_mask, "labels": labels}
        if "next_sentence_label" in examples[0]:
            out["next_sentence_label"] = torch.tensor([int(e["next_sentence_label"]) for e in examples])
        return out
