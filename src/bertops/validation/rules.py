"""Record rules that Great Expectations has no expectation for, as small pure functions.

Each `*_error` function returns None when the record is fine, or a detail string saying what is
wrong; the runner turns that into a Failure naming file, record and rule. GX covers the per-column
checks (present and non-null, type, in a set, unique, length); these cover what needs several
fields or a whole document at once: control characters, sentence counts, and the keys used by
the cross-split and duplicate checks. The rules of one kind of task (BIO structure, token/tag
alignment, SQuAD answer spans) belong to its task type (`TaskType.record_rules` in
bertops.model.multitask.task_types); the functions here that differ by task type ask the registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bertops.model.multitask.task_types import get_task_type
from bertops.model.multitask.task_types._base import label_json  # noqa: F401  (re-exported)
from bertops.text.sentences import split_sentences

# Rule names (GX rules are named "<check>:<field>" in suites.py)
MIN_SENTENCES = "min_sentences:text"
DUPLICATE_DOCUMENT = "duplicate_document"
ID_IN_ONE_SPLIT = "id_in_one_split"
TEXT_IN_ONE_SPLIT = "text_in_one_split"
NOT_IN_CORPUS = "not_in_pretraining_corpus"
FILE_EXISTS = "file_exists"
FILE_NOT_EMPTY = "file_not_empty"
NO_CONTROL_CHARACTERS = "no_control_characters"


# The leak rules' keys (text_in_one_split, not_in_pretraining_corpus) have one definition, in core
# bertops.data.leaks, shared with the fetch (which drops the examples these rules would reject).
from bertops.data.leaks import example_key, example_texts, normalize_text  # noqa: E402,F401

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


def class_balance(task_type: str, records: Iterable[dict], label_field: str) -> dict[str, int] | None:
    """Examples per class; entity mentions (B- tags) per type for token tasks; None for QA."""
    return get_task_type(task_type).class_balance(list(records), label_field)
