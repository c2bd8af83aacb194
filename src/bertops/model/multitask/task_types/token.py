"""token_classification: one BIO tag per word (named-entity style).

Features: words tokenized with `is_split_into_words`; only the first sub-token of a word carries
its tag, the rest (and specials) get -100, ignored by the loss, as the BERT paper's NER. Words cut
by max_seq_length are predicted "O". Params: `labels` (entity types, or a BIO tag set),
`tokens_field`, `label_field`. Inputs: a list of words, or a whitespace-separated string.
Metric: entity-level micro precision/recall/F1 (seqeval, conlleval rules).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from ._base import (
    IGNORE_INDEX,
    NOT_CHECKED,
    Column,
    RecordRule,
    TaskSpec,
    TaskType,
    check_lengths,
    is_str_list,
    label_str,
)

# Validation rule names (per record; the column checks are named "<check>:<field>")
TOKENS_WELL_FORMED = "tokens_well_formed"
TAGS_SAME_LENGTH = "tokens_tags_same_length"
BIO_TAGS = "bio_tags"


def bio_tags(labels: Sequence[Any]) -> list[str]:
    """Tag set of a token task: entity types [class, method] -> [O, B-class, I-class, B-method, I-method].

    A list that already is a tag set (only "O", "B-x", "I-x") is kept as given, in its order
    (datasets with integer tags, e.g. conll2003, index into it).
    """
    names = [label_str(x) for x in labels]
    if all(n == "O" or n[:2] in ("B-", "I-") for n in names):  # already a tag set
        return names
    return ["O"] + [f"{p}-{n}" for n in names for p in ("B", "I")]


def declared_entity_types(labels: Sequence[Any]) -> set[str]:
    """Entity types of a token task, whether params list types ([class, method]) or a BIO tag set
    ([O, B-class, I-class]): the types of the tag set the model is built with (`bio_tags`)."""
    return {tag[2:] for tag in bio_tags(labels) if tag != "O"}


def word_tags(word_ids: Sequence[int], tag_ids: Sequence[int], labels: Sequence[str], n_words: int) -> list[str]:
    """Word-level tags from per-token predictions: the first sub-token's tag; cut-off words are "O"."""
    tags = ["O"] * n_words
    seen = set()
    for w, t in zip(word_ids, tag_ids):
        if w >= 0 and w not in seen:
            seen.add(w)
            tags[w] = labels[int(t)]
    return tags


def token_classification_metrics(pred_tags: Sequence[Sequence[str]],
                                 gold_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 (seqeval, conlleval rules: an entity counts only
    if its type and both boundaries match; a stray I- tag starts a new entity)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    check_lengths(pred_tags, gold_tags)
    for k, (p, g) in enumerate(zip(pred_tags, gold_tags)):
        if len(p) != len(g):
            raise ValueError(f"example {k}: {len(p)} predicted tags for {len(g)} words")
    pred_l, gold_l = [list(p) for p in pred_tags], [list(g) for g in gold_tags]
    return {
        "precision": float(precision_score(gold_l, pred_l, zero_division=0)),
        "recall": float(recall_score(gold_l, pred_l, zero_division=0)),
        "f1": float(f1_score(gold_l, pred_l, zero_division=0)),
    }


# -- validation rules (plain Python; None = fine, else what is wrong) -------------------------------

def tokens_error(tokens: Any) -> str | None:
    if not isinstance(tokens, list):
        return f"tokens is a {type(tokens).__name__}, not a list"
    if not tokens:
        return "tokens is an empty list"
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str) or not tok.strip():
            return f"token {i} is {tok!r}, not a non-blank string"
    return None


def tags_length_error(tokens: Any, tags: Any) -> str | None:
    if not isinstance(tokens, list) or not isinstance(tags, list):
        return None  # the type rules report this
    if len(tokens) != len(tags):
        return f"{len(tokens)} tokens but {len(tags)} tags"
    return None


def bio_error(tags: Any, entity_types: set[str]) -> str | None:
    """IOB2: every tag is O, B-X or I-X with X declared, and I-X continues a B-X or I-X."""
    if not is_str_list(tags):
        return "tags are not a list of strings"
    prev = "O"
    for i, tag in enumerate(tags):
        if tag != "O":
            prefix, _, etype = tag.partition("-")
            if prefix not in ("B", "I") or not etype:
                return f"tag {i} {tag!r} is not O, B-TYPE or I-TYPE"
            if etype not in entity_types:
                return f"tag {i} {tag!r}: type {etype!r} not in declared {sorted(entity_types)}"
            if prefix == "I" and prev not in (f"B-{etype}", f"I-{etype}"):
                return f"tag {i} {tag!r} follows {prev!r} (I-{etype} must follow B-{etype} or I-{etype})"
        prev = tag
    return None


class TokenClassification(TaskType):
    name = "token_classification"
    metric_names = ("precision", "recall", "f1")
    primary_metric = "f1"
    balance_unit = "entity mentions per type"

    def spec_labels(self, labels: Sequence[Any]) -> list[str]:
        return bio_tags(labels)

    # -- records and inputs ----------------------------------------------------------------------

    def record_input(self, spec: TaskSpec, rec: dict) -> Any:
        return [str(t) for t in rec[spec.tokens_field]]

    def gold_label(self, spec: TaskSpec, rec: dict) -> list[str]:
        return [spec.labels[t] if isinstance(t, int) else str(t) for t in rec[spec.label_field]]

    def normalize_input(self, spec: TaskSpec, x: Any) -> Any:
        if isinstance(x, str):
            return x.split()
        return [str(t) for t in x]

    def check_record(self, spec: TaskSpec, rec: dict) -> tuple[str, str] | None:
        if spec.tokens_field not in rec:
            return f"{self.name} record has field {spec.tokens_field!r}", ""
        tokens = rec[spec.tokens_field]
        if not isinstance(tokens, list):
            return f"field {spec.tokens_field!r} is a list of tokens", ""
        if spec.label_field in rec:
            tags = self.gold_label(spec, rec)
            if len(tags) != len(tokens):
                return "one tag per token", f"{len(tags)} tags, {len(tokens)} tokens"
            bad = sorted(set(tags) - set(spec.labels))
            if bad:
                return "tags are in the task's tag set", f"unknown {bad}"
        return None

    # -- model -----------------------------------------------------------------------------------

    def encode(self, tokenizer, spec: TaskSpec, inputs: Sequence[list[str]],
               golds: Sequence[list[str]] | None = None) -> list[dict]:
        """Label the first sub-token of each word; other sub-tokens and specials get -100.

        Words beyond max_seq_length are cut (and predicted "O"); `word_ids` (-1 = none) is kept
        so predictions can be mapped back to words.
        """
        enc = tokenizer([list(t) for t in inputs], is_split_into_words=True, truncation=True,
                        max_length=spec.max_seq_length)
        tag_id = {name: i for i, name in enumerate(spec.labels)}
        feats = []
        for i in range(len(inputs)):
            word_ids = enc.word_ids(i)
            f = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                 "attention_mask": enc["attention_mask"][i], "example_index": i,
                 "word_ids": [-1 if w is None else w for w in word_ids]}
            if golds is not None:
                labels, prev = [], None
                for w in word_ids:
                    labels.append(IGNORE_INDEX if w is None or w == prev else tag_id[golds[i][w]])
                    prev = w
                f["labels"] = labels
            feats.append(f)
        return feats

    def head(self, spec: TaskSpec, in_dim: int, pooled_dim: int, dropout: float):
        from torch import nn

        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, self.num_labels(spec)))

    def loss(self, spec: TaskSpec, logits, batch: dict):
        from torch import nn

        return nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                           ignore_index=IGNORE_INDEX)

    def decode(self, spec: TaskSpec, inputs, features, logits) -> list[dict]:
        import torch

        preds = []
        for words, f, lg in zip(inputs, features, logits):
            p = torch.softmax(lg, -1)
            tags = word_tags(f["word_ids"], p.argmax(-1).tolist(), spec.labels, len(words))
            scores = [0.0] * len(words)
            seen = set()
            for w, row in zip(f["word_ids"], p):
                if w >= 0 and w not in seen:
                    seen.add(w)
                    scores[w] = float(row.max())
            preds.append({"tokens": list(words), "tags": tags, "scores": scores})
        return preds

    def flat(self, out: dict) -> dict:
        """Tags space-joined; score: the mean over words of the chosen tag's probability."""
        scores = out["scores"]
        return {**out, "prediction": " ".join(out["tags"]),
                "score": sum(scores) / len(scores) if scores else 0.0}

    def prediction(self, decoded: dict) -> Any:
        return decoded["tags"]

    def describe(self, pred: dict) -> str:
        return " ".join(f"{w}/{t}" for w, t in zip(pred["tokens"], pred["tags"]))

    # -- evaluation ------------------------------------------------------------------------------

    def metrics(self, pred: Sequence, gold: Sequence, labels: Sequence | None = None) -> dict[str, float]:
        return token_classification_metrics(pred, gold)

    def majority_predictions(self, spec: TaskSpec, train_records: Sequence[dict],
                             test_records: Sequence[dict]) -> list:
        """Every word "O": entity F1 is then 0 (no entity is ever found)."""
        return [["O"] * len(self.record_input(spec, r)) for r in test_records]

    # -- validation ------------------------------------------------------------------------------

    def columns(self, tp) -> list[Column]:
        return [Column(tp.tokens_field, "list"), Column(tp.label_field, "list")]

    def record_rules(self, tp) -> list[RecordRule]:
        types = declared_entity_types(tp.labels)

        def pair(rec: dict) -> tuple[Any, Any] | None:
            tokens, tags = rec.get(tp.tokens_field), rec.get(tp.label_field)
            return (tokens, tags) if isinstance(tokens, list) and isinstance(tags, list) else None

        def rule(check):  # lists only: a missing or mistyped field is the column checks' to report
            return lambda rec: NOT_CHECKED if pair(rec) is None else check(*pair(rec))

        return [RecordRule(TOKENS_WELL_FORMED, rule(lambda tokens, tags: tokens_error(tokens))),
                RecordRule(TAGS_SAME_LENGTH, rule(tags_length_error)),
                RecordRule(BIO_TAGS, rule(lambda tokens, tags: bio_error(tags, types)))]

    def example_inputs(self, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list:
        tokens = rec.get(tokens_field)
        return [" ".join(tokens)] if is_str_list(tokens) else []

    def prose(self, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list[str]:
        return self.example_inputs(rec, text_fields, tokens_field)

    def class_balance(self, records: Sequence[dict], label_field: str) -> dict[str, int] | None:
        counts: collections.Counter[str] = collections.Counter()
        for rec in records:
            value = rec.get(label_field)
            if is_str_list(value):
                counts.update(tag[2:] for tag in value if tag.startswith("B-"))
        return dict(counts)


TASK_TYPE = TokenClassification()
