"""Where each attention head of a BERT checkpoint looks: is the encoder past the MLM plateau?

During the plateau of small-budget pretraining every head of the tiny preset attends about uniformly
(layer 0) or parks on [CLS]/[SEP] (layer 1); the held-out MLM loss drops when a head starts to
attend to the neighbouring tokens (docs/pretraining-recipe.md, "Short sequences first"). This prints,
per layer and head, over real tokens of some task texts: the attention entropy (nats; uniform over n
tokens is ln n), the share on [CLS]/[SEP], on the two neighbours (i-1, i+1) and on the token itself.

    .venv/bin/python bench/attention_probe.py artifacts/pretrain/model [more models or .ckpt files]

A pretrain checkpoint (pretrain/checkpoints/last.ckpt) is read with BertPretrainingModule's own
load_from_checkpoint; texts are tokenized with --tokenizer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def load(path: str):
    """The BertForPreTraining of a model dir or of a pretrain checkpoint, with attention weights out."""
    from transformers import BertForPreTraining

    if path.endswith(".ckpt"):
        from bertops.train.pretrain_module import BertPretrainingModule

        model = BertPretrainingModule.load_from_checkpoint(path, map_location="cpu").model
    else:
        model = BertForPreTraining.from_pretrained(path)
    model.set_attn_implementation("eager")  # SDPA returns no attention weights
    return model.eval()


def probe(model, batch: dict, special_ids: list[int]) -> list[dict]:
    with torch.no_grad():
        attentions = model.bert(**batch, output_attentions=True).attentions  # per layer: (B, H, n, n)
    real = batch["attention_mask"].bool()
    rows = real.nonzero()  # (example, position) of every real query token
    n = real.shape[1]
    pos = torch.arange(n)
    neighbour = ((pos[:, None] - pos[None, :]).abs() == 1).float()[rows[:, 1]]
    itself = torch.eye(n)[rows[:, 1]]
    special = torch.isin(batch["input_ids"], torch.tensor(special_ids)).float()[rows[:, 0]]
    out = []
    for layer, att in enumerate(attentions):
        for head in range(att.shape[1]):
            p = att[:, head][real]  # (real queries, n)
            out.append({"layer": layer, "head": head,
                        "entropy": float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean()),
                        "special": float((p * special).sum(-1).mean()),
                        "neighbours": float((p * neighbour).sum(-1).mean()),
                        "self": float((p * itself).sum(-1).mean())})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="HF model dirs or Lightning .ckpt files")
    ap.add_argument("--tokenizer", default="artifacts/tokenizer")
    ap.add_argument("--texts", default="data/tasks/topic/validation.jsonl", help="jsonl with a `text` field")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    with open(args.texts) as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(args.examples))]
    batch = dict(tok(texts, truncation=True, max_length=args.max_length, padding=True, return_tensors="pt"))
    for path in args.models:
        print(f"{Path(path)}")
        for h in probe(load(path), batch, [tok.cls_token_id, tok.sep_token_id]):
            print(f"  layer {h['layer']} head {h['head']}: entropy {h['entropy']:.2f}  [CLS]/[SEP] {h['special']:.2f}"
                  f"  neighbours {h['neighbours']:.2f}  self {h['self']:.2f}")


if __name__ == "__main__":
    main()
