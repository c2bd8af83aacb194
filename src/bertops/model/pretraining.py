"""BERT pretraining (MLM + NSP) with the MLM head applied only at the masked positions.

The model is a stock transformers `BertForPreTraining`: same modules, same parameter names, same
tied decoder, so `save_pretrained` writes a standard checkpoint that loads without bertops.
`BertPretrainingObjective` wraps it and computes the same loss as `BertForPreTraining(...,
labels=..., next_sentence_label=...)`, but gathers the masked positions *before* the MLM
transform and vocabulary projection. Stock BERT projects every position onto the vocabulary and
then ignores 85% of the result; at small hidden sizes that projection is most of the step.

Two ways to gather (`max_predictions`):
- None: exactly the positions whose label is not -100 (data-dependent shape; eager mode).
- an int K: always K positions per batch (the masked ones first, then filler positions whose label
  is -100), so every tensor has a static shape and torch.compile / CUDA graphs need no recompiles.
  Masked positions beyond K are dropped from the loss and counted in `mlm_dropped`; size K with
  margin (Google used max_predictions_per_seq=20 at seq 128).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import BertConfig, BertForPreTraining


def build_pretraining_model(config: BertConfig) -> BertForPreTraining:
    """A randomly initialised stock BertForPreTraining (BERT's init: normal(0, 0.02))."""
    from transformers import BertForPreTraining

    return BertForPreTraining(config)


class PretrainingOutput(NamedTuple):
    """Loss and on-device counts (no host sync: metrics are reduced when logged). A NamedTuple
    because torch.compile returns those without a graph break."""

    loss: torch.Tensor
    mlm_loss: torch.Tensor
    nsp_loss: torch.Tensor
    mlm_correct: torch.Tensor  # correct predictions over the masked positions kept
    mlm_count: torch.Tensor  # masked positions kept in the loss
    mlm_dropped: torch.Tensor  # masked positions beyond max_predictions (0 when gathering all)
    nsp_correct: torch.Tensor
    nsp_count: torch.Tensor
    predicted_positions: int  # rows the MLM head ran on (FLOP accounting)


def gather_masked_positions(labels: torch.Tensor, max_predictions: int | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the positions to predict and their labels (-100 = filler, ignored).

    With max_predictions=K the result always has K entries: a stable sort puts masked positions
    first, in order, so the shape never depends on the data.
    """
    flat = labels.reshape(-1)
    masked = flat != -100
    if max_predictions is None:
        index = masked.nonzero().squeeze(1)
    else:
        k = min(max_predictions, flat.numel())
        index = torch.sort((~masked).to(torch.uint8), stable=True).indices[:k]
    return index, flat.index_select(0, index)


class BertPretrainingObjective(nn.Module):
    """Sparse-MLM + NSP loss over a stock `BertForPreTraining` (held as `.model`)."""

    def __init__(self, model: BertForPreTraining, max_predictions: int | None = None):
        super().__init__()
        self.model = model
        self.max_predictions = max_predictions

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None, **_: Any) -> PretrainingOutput:
        bert, heads = self.model.bert, self.model.cls
        out = bert(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state
        index, target = gather_masked_positions(labels, self.max_predictions)
        # The MLM transform (dense + GELU + LayerNorm) and the tied decoder only see these rows.
        logits = heads.predictions(hidden.reshape(-1, hidden.shape[-1]).index_select(0, index))
        kept = target != -100
        mlm_count = kept.sum()
        # Mean over the masked positions, as stock BERT's loss; a sum / count so a batch with no
        # masked token gives 0 instead of NaN.
        mlm_loss = nn.functional.cross_entropy(logits.float(), target, ignore_index=-100,
                                               reduction="sum") / mlm_count.clamp(min=1)
        mlm_correct = ((logits.argmax(-1) == target) & kept).sum()
        mlm_dropped = (labels != -100).sum() - mlm_count

        if next_sentence_label is not None:
            nsp_logits = heads.seq_relationship(out.pooler_output)
            nsp_loss = nn.functional.cross_entropy(nsp_logits.float(), next_sentence_label)
            nsp_correct = (nsp_logits.argmax(-1) == next_sentence_label).sum()
            nsp_count = torch.tensor(next_sentence_label.numel(), device=input_ids.device)
        else:
            nsp_loss = hidden.new_zeros((), dtype=torch.float32)
            nsp_correct = nsp_count = torch.zeros((), dtype=torch.long, device=input_ids.device)
        return PretrainingOutput(
            loss=mlm_loss + nsp_loss, mlm_loss=mlm_loss, nsp_loss=nsp_loss, mlm_correct=mlm_correct,
            mlm_count=mlm_count, mlm_dropped=mlm_dropped, nsp_correct=nsp_correct, nsp_count=nsp_count,
            predicted_positions=int(index.shape[0]))
