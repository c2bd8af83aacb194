"""Does an encoder's contextual vector of WiC's target word say more about its sense than the pooled
pair? A frozen-feature probe, pretrained encoder against the same config with random weights.

For each WiC pair ([CLS] sentence1 [SEP] sentence2 [SEP], the encoder frozen) two feature sets:
- mean: the mean of every token's last-layer vector (the fine-tuning heads' `pooling: mean`);
- target: u, v = the mean vector of the target word's word pieces in each sentence (its first
  occurrence as a word start), as [u, v, u * v, |u - v|] (SuperGLUE's WiC baseline reads the word's
  span; the products let a linear model compare the two).
Logistic regression on the first --train-examples train pairs, C from a small grid scored on the
validation split (which is all it reports: an exploration, not a verdict; the test split is not read).

    .venv/bin/python bench/wic_target_probe.py artifacts/pretrain/model --train-examples 800
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch


def target_span(word: str, text: str) -> tuple[int, int]:
    m = re.search(r"(?<!\w)" + re.escape(word) + r"\w*", text, re.IGNORECASE)
    if m is None:
        raise ValueError(f"target word {word!r} not in {text!r}")
    return m.span()


def features(encoder, tokenizer, records: list[dict], max_length: int = 64) -> tuple[np.ndarray, np.ndarray]:
    means, targets = [], []
    for i in range(0, len(records), 64):
        batch = records[i:i + 64]
        enc = tokenizer([r["sentence1"] for r in batch], [r["sentence2"] for r in batch], padding=True,
                        truncation=True, max_length=max_length, return_offsets_mapping=True, return_tensors="pt")
        with torch.no_grad():
            h = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                        token_type_ids=enc["token_type_ids"]).last_hidden_state
        for j, r in enumerate(batch):
            seq, offsets = enc.sequence_ids(j), enc["offset_mapping"][j].tolist()
            words = []
            for k, text in enumerate((r["sentence1"], r["sentence2"])):
                a, z = target_span(r["word"], text)
                idx = [t for t, (s, (o0, o1)) in enumerate(zip(seq, offsets)) if s == k and o0 < z and o1 > a]
                words.append(h[j, idx].mean(0))
            u, v = words
            means.append(h[j, enc["attention_mask"][j].bool()].mean(0).numpy())
            targets.append(torch.cat([u, v, u * v, (u - v).abs()]).numpy())
    return np.stack(means), np.stack(targets)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoTokenizer, BertConfig, BertModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("encoder_dir")
    ap.add_argument("--task-dir", default="data/tasks/wic")
    ap.add_argument("--train-examples", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0, help="the random-init encoder's weights")
    args = ap.parse_args()

    def load(split: str) -> list[dict]:
        return [json.loads(line) for line in open(Path(args.task_dir) / f"{split}.jsonl", encoding="utf-8")]

    train, validation = load("train")[:args.train_examples], load("validation")
    tokenizer = AutoTokenizer.from_pretrained(args.encoder_dir)
    torch.manual_seed(args.seed)
    encoders = {"pretrained": BertModel.from_pretrained(args.encoder_dir),
                "random init": BertModel(BertConfig.from_pretrained(args.encoder_dir))}
    y_train, y_val = [r["label"] for r in train], [r["label"] for r in validation]
    print(f"| encoder | mean-pooled pair | target word [u, v, u*v, abs(u-v)] |  ({len(train)} train, "
          f"{len(validation)} validation pairs; validation accuracy, best C of 0.01-10)")
    print("|---|---:|---:|")
    for name, encoder in encoders.items():
        encoder.eval()
        tr, va = features(encoder, tokenizer, train), features(encoder, tokenizer, validation)
        scores = [max(LogisticRegression(C=c, max_iter=2000).fit(tr[k], y_train).score(va[k], y_val)
                      for c in (0.01, 0.1, 1.0, 10.0)) for k in range(2)]
        print(f"| {name} | {scores[0]:.3f} | {scores[1]:.3f} |")


if __name__ == "__main__":
    main()
