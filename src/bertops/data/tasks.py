"""Downstream task data: load and check a split's records; feature building and decoding.

A task is data (params.yaml `tasks:`): everything is driven by a `TaskSpec` built from its
`TaskParams`, so a new task of a known type needs no code. Feature building and decoding
(`encode`, `best_span`, `postprocess_qa`, ...) live in bertops.model.multitask, which must stay a
self-contained file for serving; they are re-exported here for the training and evaluate code.

Records: `<path>/<split>.jsonl` (or a `datasets` split when the task names `dataset`), checked
on load: a record that breaks a rule raises DataError naming the file, the record and the rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from bertops.errors import DataError
from bertops.model.multitask import (  # re-exported: see __all__
    CLASSIFICATION_TYPES,
    IGNORE_INDEX,
    TaskSpec,
    best_span,
    bio_tags,
    encode,
    encode_classification,
    encode_qa,
    encode_token_classification,
    gold_label,
    label_str,
    normalize_input,
    postprocess_qa,
    record_input,
    word_tags,
)

if TYPE_CHECKING:
    from bertops.config import TaskParams

__all__ = [
    "CLASSIFICATION_TYPES", "IGNORE_INDEX", "TaskSpec", "best_span", "bio_tags", "encode",
    "encode_classification", "encode_qa", "encode_records", "encode_token_classification", "gold_label",
    "label_str", "load_records", "normalize_input", "postprocess_qa", "record_input", "word_tags",
]


def load_records(tp: "TaskParams", split: str, name: str = "task") -> list[dict]:
    """Records of one split: `<path>/<split>.jsonl`, or a `datasets` split when `dataset` is set."""
    if tp.path is not None:
        from bertops.io import read_jsonl

        file = Path(tp.path) / f"{split}.jsonl"
        if not file.exists():
            raise DataError(file, None, "task split file exists",
                            f"task {name!r} has no {split} split (run `bertops data fetch`?)")
        records = list(read_jsonl(file))
        source = str(file)
    else:
        import datasets

        records = list(datasets.load_dataset(tp.dataset, tp.dataset_config, split=split))
        source = f"{tp.dataset}:{split}"
    spec = TaskSpec.from_params(name, tp)
    for i, rec in enumerate(records):
        _check_record(spec, rec, source, rec.get("id", i))
    return records


def _check_record(spec: TaskSpec, rec: dict, source: str, where: Any) -> None:
    def need(key: str) -> Any:
        if key not in rec:
            raise DataError(source, where, f"{spec.type} record has field {key!r}")
        return rec[key]

    if spec.type in CLASSIFICATION_TYPES:
        for f in spec.text_fields:
            if not isinstance(need(f), str):
                raise DataError(source, where, f"field {f!r} is a string")
        if spec.label_field in rec and gold_label(spec, rec) not in spec.labels:
            raise DataError(source, where, "label is one of the task's labels",
                            f"{rec[spec.label_field]!r} not in {spec.labels}")
    elif spec.type == "token_classification":
        tokens = need(spec.tokens_field)
        if not isinstance(tokens, list):
            raise DataError(source, where, f"field {spec.tokens_field!r} is a list of tokens")
        if spec.label_field in rec:
            tags = gold_label(spec, rec)
            if len(tags) != len(tokens):
                raise DataError(source, where, "one tag per token", f"{len(tags)} tags, {len(tokens)} tokens")
            bad = sorted(set(tags) - set(spec.labels))
            if bad:
                raise DataError(source, where, "tags are in the task's tag set", f"unknown {bad}")
    else:
        need("question"), need("context")
        answers = rec.get("answers")
        if answers is not None:
            texts, starts = answers.get("text", []), answers.get("answer_start", [])
            if len(texts) != len(starts):
                raise DataError(source, where, "answers.text and answers.answer_start align")
            for t, s in zip(texts, starts):
                if rec["context"][s:s + len(t)] != t:
                    raise DataError(source, where, "answer text is found at answer_start in context",
                                    f"{t!r} at {s}")


def encode_records(tokenizer, spec: TaskSpec, records: Sequence[dict], with_labels: bool = True) -> list[dict]:
    inputs = [record_input(spec, r) for r in records]
    golds = None
    if with_labels:
        golds = [r["answers"] for r in records] if spec.type == "extractive_qa" \
            else [gold_label(spec, r) for r in records]
    return encode(tokenizer, spec, inputs, golds)


