"""Record rules that Great Expectations has no expectation for, as small pure functions.

Each `*_error` function returns None when the record is fine, or a detail string saying what is
wrong; the runner turns that into a Failure naming file, record and rule. GX covers the per-column
checks (present and non-null, type, in a set, unique, length); these cover what needs several
fields or a whole sequence at once: BIO structure, token/tag alignment, SQuAD answer spans,
sentence counts, and the keys used by the cross-split and duplicate checks.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Iterable, Sequence

from bertops.text.sentences import split_sentences


# Rule names (GX rules are named "<check>:<field>" in suites.py)
MIN_SENTENCES = "min_sentences:text"
DUPLICATE_DOCUMENT = "duplicate_document"
TOKENS_WELL_FORMED = "tokens_well_formed"
TAGS_SAME_LENGTH = "tokens_tags_same_length"
BIO_TAGS = "bio_tags"
ANSWERS_WELL_FORMED = "answers_well_formed"
ANSWER_SPAN = "answer_span"
ID_IN_ONE_SPLIT = "id_in_one_split"
TEXT_IN_ONE_SPLIT = "text_in_one_split"
NOT_IN_CORPUS = "not_in_pretraining_corpus"
FILE_EXISTS = "file_exists"
FILE_NOT_EMPTY = "file_not_empty"
NO_CONTROL_CHARACTERS = "no_control_characters"


# One definition, shared with the fetch (which drops the examples these rules would reject):
# casefolded words joined by single spaces, so spacing, punctuation and case do not hide a duplicate.
from bertops.data.leaks import normalize_text  # noqa: E402


# Unicode's control characters (category Cc: U+0000-U+001F, U+007F-U+009F) except tab and newline.
# BERT's normalizer silently drops them, so text carrying them (a stray NUL, a form feed, a
# carriage return, an escape sequence) is not the text the model sees: rejected, not cleaned.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def control_character_error(rec: dict) -> str | None:
    """The first control character other than tab and newline in any string of the record (nested
    lists and objects included, e.g. tokens, answers.text), named by field and offset."""
    for where, text in _strings(rec, ""):
        m = _CONTROL.search(text)
        if m:
            i = m.start()
            return (f"{where} has control character U+{ord(m.group()):04X} at offset {i} "
                    f"(only tab and newline are allowed): {text[max(0, i - 30):i + 30]!r}")
    return None


def _strings(value: Any, where: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


def count_sentences(text: str) -> int:
    """Sentences as the tokenize stage sees them (paragraph breaks, then blingfire)."""
    return len(split_sentences(text))


def label_json(value: Any) -> str | None:
    """A label as JSON text, so that GX's set check tells `true` from `1` and `"true"`
    (in Python True == 1, and pandas' isin compares by ==)."""
    return None if value is None else json.dumps(value, sort_keys=True)


def declared_entity_types(labels: Sequence[Any]) -> set[str]:
    """Entity types of a token task, whether params list types ([class, method]) or a BIO tag set
    ([O, B-class, I-class]), as bertops.data.tasks.bio_tags reads them (not imported: that
    module pulls in torch, seconds of start-up this stage does not need)."""
    names = [str(x) for x in labels]
    if all(n == "O" or n[:2] in ("B-", "I-") for n in names):
        return {n[2:] for n in names if n != "O"}
    return set(names)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


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
    if not _is_str_list(tags):
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


def answers_error(answers: Any) -> str | None:
    """SQuAD format: {"text": [str, ...], "answer_start": [int, ...]}, same length, at least one."""
    if not isinstance(answers, dict):
        return f"answers is a {type(answers).__name__}, not an object"
    texts, starts = answers.get("text"), answers.get("answer_start")
    if not _is_str_list(texts):
        return "answers.text is not a list of strings"
    if not isinstance(starts, list) or not all(type(s) is int for s in starts):  # bool is not an offset
        return "answers.answer_start is not a list of integers"
    if len(texts) != len(starts):
        return f"{len(texts)} answer texts but {len(starts)} answer_start offsets"
    if not texts:
        return "no answer"
    return None


def answer_span_error(context: Any, answers: dict) -> str | None:
    """Each answer text must be exactly context[answer_start : answer_start + len(text)]."""
    if not isinstance(context, str):
        return None  # the type rules report this
    for i, (text, start) in enumerate(zip(answers["text"], answers["answer_start"])):
        if not text.strip():
            return f"answer {i} is empty"
        if start < 0 or start + len(text) > len(context):
            return f"answer {i} {text!r} at {start} lies outside the context ({len(context)} chars)"
        found = context[start:start + len(text)]
        if found != text:
            return f"answer {i} {text!r} != context[{start}:{start + len(text)}] {found!r}"
    return None


def example_key(task_type: str, rec: dict, text_fields: Sequence[str], tokens_field: str) -> str | None:
    """The normalized input of an example, for 'no text in two splits'. A pair is one key (the
    same sentence may appear in pairs of different splits, as in WiC); QA is question + context."""
    if task_type == "token_classification":
        tokens = rec.get(tokens_field)
        parts = [" ".join(tokens)] if _is_str_list(tokens) else []
    elif task_type == "extractive_qa":
        parts = [rec.get("question"), rec.get("context")]
    else:
        parts = [rec.get(f) for f in text_fields]
    if not parts or not all(isinstance(p, str) for p in parts):
        return None
    key = " || ".join(normalize_text(p) for p in parts)
    return key if key.replace("|", "").strip() else None


def example_texts(task_type: str, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list[str]:
    """The prose of an example that must not occur in the pretraining corpus."""
    if task_type == "token_classification":
        tokens = rec.get(tokens_field)
        return [" ".join(tokens)] if _is_str_list(tokens) else []
    fields = ["context", "question"] if task_type == "extractive_qa" else text_fields
    return [rec[f] for f in fields if isinstance(rec.get(f), str)]


def class_balance(task_type: str, records: Iterable[dict], label_field: str) -> dict[str, int] | None:
    """Examples per class; entity mentions (B- tags) per type for token tasks; None for QA."""
    if task_type == "extractive_qa":
        return None
    counts: Counter[str] = Counter()
    for rec in records:
        value = rec.get(label_field)
        if task_type == "token_classification":
            if _is_str_list(value):
                counts.update(tag[2:] for tag in value if tag.startswith("B-"))
        elif value is not None:
            counts[label_json(value) if not isinstance(value, str) else value] += 1
    return dict(counts)
