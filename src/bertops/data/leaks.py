"""What makes a held-out example a leak: the one definition. `bertops stage validate` rejects data
that has leaks (rules text_in_one_split and not_in_pretraining_corpus, in bertops.validation, which
imports these functions), and `bertops data fetch` drops the examples those rules would reject,
so the two agree by construction.

- text_in_one_split (`example_key`): an example whose normalized input (casefolded words) is
  already in an earlier split (train -> validation -> test) is a leak. What the input is depends
  on the task type (the task-type registry says: a pair is one key; QA is question + context).
- not_in_pretraining_corpus (`SentenceIndex`): an example of a checked split is a leak when at
  least `min_overlap` of its sentences of `min_words` words or more are corpus sentences.

The sentence index: a hash set of the corpus's normalized sentences. Every corpus sentence
(paragraph breaks, then blingfire, as the tokenize stage splits) with at least `min_words` words
is casefolded, reduced to its words (`normalize_text`) and its hash stored with where it came
from. Building is one pass over the corpus (~100k sentences, a couple of seconds for ~15 MB);
each lookup is O(sentences of the example). A fraction of sentences, not "any": news articles
share boilerplate sentences with related articles ("Mr X could face 85 years if convicted..."),
which does not put the test article in the corpus; a near-copy of it does. An example of one
sentence is contaminated when that sentence is in the corpus.

Why not substring search (Aho-Corasick over all task texts): it finds the same leaks when examples
are whole sentences or documents, which is how the built-in tasks are made, but costs a
dependency and more memory; sentence hashing also ignores spacing/punctuation differences such as
tokens joined with spaces. What it misses: a fragment shorter than a sentence, or text whose
sentence boundaries differ from the corpus's. `min_words` keeps short stock sentences
("Thank you very much.") from counting as leaks.

Core code: imports neither Great Expectations nor anything of bertops.validation.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence

from bertops.model.multitask.task_types import get_task_type
from bertops.text.sentences import split_sentences

SPLITS = ("train", "validation", "test")
_WORD = re.compile(r"\w+")

# reasons an example is dropped, as counted in MANIFEST.json
IN_EARLIER_SPLIT = "in_earlier_split"
IN_CORPUS = "in_corpus"


def normalize_text(text: str) -> str:
    """Casefolded words joined by single spaces, so spacing, punctuation and case do not hide a
    duplicate."""
    return " ".join(_WORD.findall(text.casefold()))


def example_key(task_type: str, rec: dict, text_fields: Sequence[str], tokens_field: str) -> str | None:
    """The normalized input of an example, for 'no text in two splits'. A pair is one key (the
    same sentence may appear in pairs of different splits, as in WiC); QA is question + context.
    None when the record has no usable input (the type rules report that)."""
    parts = get_task_type(task_type).example_inputs(rec, text_fields, tokens_field)
    if not parts or not all(isinstance(p, str) for p in parts):
        return None
    key = " || ".join(normalize_text(p) for p in parts)
    return key if key.replace("|", "").strip() else None


def example_texts(task_type: str, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list[str]:
    """The prose of an example that must not occur in the pretraining corpus."""
    return get_task_type(task_type).prose(rec, text_fields, tokens_field)


def is_contaminated(found: int, checked: int, min_overlap: float) -> bool:
    """At least `min_overlap` of the example's checked sentences are corpus sentences (and one is)."""
    return found > 0 and found >= min_overlap * checked


class SentenceIndex:
    """Normalized corpus sentences of at least `min_words` words, each with where it came from."""

    def __init__(self, min_words: int):
        self.min_words = min_words
        self._where: dict[int, tuple[str, int]] = {}  # hash(normalized sentence) -> (file key, line)

    def __len__(self) -> int:
        return len(self._where)

    def _key(self, sentence: str) -> int | None:
        norm = normalize_text(sentence)
        if norm.count(" ") + 1 < self.min_words:
            return None
        return hash(norm)

    def add(self, sentences: Iterable[str], file_key: str = "", line: int = 0) -> None:
        """Sentences of one corpus document (split as `split_sentences` splits)."""
        for sentence in sentences:
            key = self._key(sentence)
            if key is not None:
                self._where.setdefault(key, (file_key, line))

    def overlap(self, texts: Iterable[str]) -> tuple[int, int, tuple[str, tuple[str, int]] | None]:
        """(sentences found in the corpus, sentences checked, first hit as (sentence, (file key, line)))."""
        found = checked = 0
        first = None
        for text in texts:
            for sentence in split_sentences(text):
                key = self._key(sentence)
                if key is None:
                    continue
                checked += 1
                if key in self._where:
                    found += 1
                    if first is None:
                        first = (sentence, self._where[key])
        return found, checked, first

    def contaminated(self, texts: Iterable[str], min_overlap: float) -> bool:
        found, checked, _ = self.overlap(texts)
        return is_contaminated(found, checked, min_overlap)


def drop_leaks(splits: dict[str, list[dict]], index: SentenceIndex, min_overlap: float,
               corpus_checked: Collection[str], task_type: str, text_fields: Sequence[str] = (),
               tokens_field: str = "tokens") -> tuple[dict[str, list[dict]], dict[str, dict[str, int]]]:
    """The splits of one task (records of `task_type`) without the examples the validator would
    flag, and per split the number dropped by reason. Order kept; an input repeated inside one
    split is not a leak (the validator compares splits), and a dropped example's input does not
    count as seen."""
    seen: set[str] = set()
    out, dropped = {}, {}
    for split in SPLITS:
        kept, here, n = [], set(), Counter()
        for rec in splits[split]:
            key = example_key(task_type, rec, text_fields, tokens_field)
            if key is not None and key in seen:
                n[IN_EARLIER_SPLIT] += 1
            elif split in corpus_checked and index.contaminated(
                    example_texts(task_type, rec, text_fields, tokens_field), min_overlap):
                n[IN_CORPUS] += 1
            else:
                kept.append(rec)
                if key is not None:
                    here.add(key)
        seen |= here
        out[split], dropped[split] = kept, dict(sorted(n.items()))
    return out, dropped
