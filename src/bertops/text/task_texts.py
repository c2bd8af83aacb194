"""Task-adaptive pretraining text: the downstream tasks' *training* inputs as corpus documents.

Gururangan et al. 2020 ("Don't Stop Pretraining"): pretraining on the unlabeled training texts of
the downstream tasks helps them. The tokenize stage adds these documents to the corpus of
`data.corpus_sources` when `pretraining_data.task_texts` names tasks; data/ itself is not changed
(so `data.dvc`, the task splits and the validate stage's view of data/ stay as they are).

What enters, per task type (fields from params `tasks:`):
- sequence_classification: each text field of a record is a paragraph;
- pair_classification: each sentence of a pair, every distinct sentence once;
- token_classification: the tokens joined by spaces;
- extractive_qa: the question followed by its answer ("Which word means: <gloss>? <word>."),
  then the context; for define-qa that is a WordNet gloss and the examples of a *training* synset.
Paragraphs are grouped `per_document` to a document (next-sentence pairs need two segments),
de-duplicated (normalized text), labels never enter.

Only the `train` split is read, and every sentence that also occurs (normalized: casefolded words,
as bertops.data.leaks.normalize_text) in the validation or test split of *any* declared task is
dropped, whatever its length. That is stricter than the validate stage's contamination rule
(sentences of 8+ words, half of an example): WiC and define-qa both draw WordNet example sentences
but split by different keys (word vs synset), so one task's training sentence can be another's
test sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bertops.text.sentences import split_sentences

HELD_OUT_SPLITS = ("validation", "test")
SOURCE = "task_texts"  # the documents' source field (the file is artifacts/tokenize/task_texts.jsonl)
_WORD = re.compile(r"\w+")


def normalize_text(text: str) -> str:
    """Casefolded words joined by single spaces: the same as bertops.data.leaks.normalize_text
    (not imported: that module imports the task-type registry, which the tokenize stage must not
    depend on; tests/unit/test_task_texts.py checks the two agree)."""
    return " ".join(_WORD.findall(text.casefold()))


def record_texts(task_type: str, rec: Mapping[str, Any], text_fields: Iterable[str],
                 tokens_field: str = "tokens", with_answer: bool = True) -> list[str]:
    """The input texts of one task record, as paragraphs (no labels)."""
    if task_type == "token_classification":
        tokens = rec.get(tokens_field) or []
        return [" ".join(str(t) for t in tokens)] if tokens else []
    if task_type == "extractive_qa":
        question, context = str(rec.get("question") or ""), str(rec.get("context") or "")
        answers = (rec.get("answers") or {}).get("text") or []
        if with_answer and answers and question:
            answer = str(answers[0]).strip()
            question = f"{question} {answer}." if answer else question
        return [t for t in (question, context) if t.strip()]
    return [str(rec[f]) for f in text_fields if isinstance(rec.get(f), str) and rec[f].strip()]


def _read_split(task_dir: Path, split: str) -> Iterator[dict]:
    from bertops.io import read_jsonl

    path = task_dir / f"{split}.jsonl"
    if path.is_file():
        yield from read_jsonl(path)


def held_out_sentences(tasks: Mapping[str, Any]) -> set[str]:
    """Normalized sentences (and whole input texts) of every validation/test record of `tasks`
    (name -> TaskParams-like objects with type, path, text_fields, tokens_field)."""
    index: set[str] = set()
    for t in tasks.values():
        for split in HELD_OUT_SPLITS:
            for rec in _read_split(Path(t.path), split):
                for text in record_texts(t.type, rec, t.text_fields, t.tokens_field, with_answer=False):
                    index.add(normalize_text(text))
                    index.update(normalize_text(s) for s in split_sentences(text))
    index.discard("")
    return index


def task_train_documents(tasks: Mapping[str, Any], names: Iterable[str], per_document: int = 8,
                         held_out: set[str] | None = None, stats: dict | None = None
                         ) -> list[dict]:
    """Corpus records {"id", "source", "text"} built from the train splits of tasks `names`.

    `held_out`: normalized sentences to drop (default: held_out_sentences over *all* `tasks`).
    `stats` (if given) receives, per task, the paragraphs and sentences kept and dropped.
    """
    held_out = held_out_sentences(tasks) if held_out is None else held_out
    stats = {} if stats is None else stats
    seen: set[str] = set()
    docs: list[dict] = []
    for name in names:
        t = tasks[name]
        counts = stats.setdefault(name, {"paragraphs": 0, "duplicate_paragraphs": 0,
                                         "held_out_sentences_dropped": 0, "documents": 0})
        paragraphs: list[str] = []
        for rec in _read_split(Path(t.path), "train"):
            for text in record_texts(t.type, rec, t.text_fields, t.tokens_field):
                kept = []
                for sentence in split_sentences(text):
                    if normalize_text(sentence) in held_out:
                        counts["held_out_sentences_dropped"] += 1
                    else:
                        kept.append(sentence)
                paragraph = " ".join(kept).strip()
                key = normalize_text(paragraph)
                if not key:
                    continue
                if key in seen:
                    counts["duplicate_paragraphs"] += 1
                    continue
                seen.add(key)
                paragraphs.append(paragraph)
        counts["paragraphs"] = len(paragraphs)
        for i in range(0, len(paragraphs), per_document):
            # source = the file's name, as data/corpus files have it (validate: source_matches_file)
            docs.append({"id": f"{SOURCE}/{name}/{i // per_document:06d}", "source": SOURCE,
                         "text": "\n\n".join(paragraphs[i:i + per_document])})
            counts["documents"] += 1
    return docs
