"""Keep held-out examples out of the train split and out of the pretraining corpus, by the very
definitions `bertops stage validate` checks, so that the fetch and the validator agree by
construction:

- text_in_one_split (bertops.validation.rules.example_key): an example whose normalized input
  (casefolded words) is already in an earlier split (train -> validation -> test) is a leak;
- not_in_pretraining_corpus (bertops.validation.contamination): an example of a checked split is
  a leak when at least `min_overlap` of its sentences of `min_words` words or more are corpus
  sentences (sentences split as the tokenize stage splits them, then normalized).

Copied, not imported: core code must not import bertops.validation (it pulls in Great
Expectations). tests/unit/test_sources_leaks.py checks the copies against the originals.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Collection, Iterable

from bertops.text.sentences import split_sentences

SPLITS = ("train", "validation", "test")
_WORD = re.compile(r"\w+")

# reasons an example is dropped, as counted in MANIFEST.json
IN_EARLIER_SPLIT = "in_earlier_split"
IN_CORPUS = "in_corpus"


def normalize_text(text: str) -> str:
    """Casefolded words joined by single spaces (= bertops.validation.rules.normalize_text)."""
    return " ".join(_WORD.findall(text.casefold()))


def example_key(rec: dict) -> str | None:
    """The normalized input of a built-in task record, as the validator keys it: tokens joined by
    spaces; QA question + context; a pair as one key; else the text. None when it has no words."""
    if "tokens" in rec:
        parts = [" ".join(rec["tokens"])]
    elif "context" in rec:
        parts = [rec["question"], rec["context"]]
    elif "sentence1" in rec:
        parts = [rec["sentence1"], rec["sentence2"]]
    else:
        parts = [rec["text"]]
    key = " || ".join(normalize_text(p) for p in parts)
    return key if key.replace("|", "").strip() else None


def example_texts(rec: dict) -> list[str]:
    """The prose of a built-in task record that must not be in the pretraining corpus."""
    if "tokens" in rec:
        return [" ".join(rec["tokens"])]
    if "context" in rec:
        return [rec["context"], rec["question"]]
    if "sentence1" in rec:
        return [rec["sentence1"], rec["sentence2"]]
    return [rec["text"]]


class SentenceIndex:
    """Normalized corpus sentences of at least `min_words` words."""

    def __init__(self, min_words: int):
        self.min_words = min_words
        self._sentences: set[str] = set()

    def __len__(self) -> int:
        return len(self._sentences)

    def _key(self, sentence: str) -> str | None:
        norm = normalize_text(sentence)
        return norm if norm.count(" ") + 1 >= self.min_words else None

    def add_document(self, text: str) -> None:
        for sentence in split_sentences(text):
            key = self._key(sentence)
            if key is not None:
                self._sentences.add(key)

    def contaminated(self, texts: Iterable[str], min_overlap: float) -> bool:
        found = checked = 0
        for text in texts:
            for sentence in split_sentences(text):
                key = self._key(sentence)
                if key is not None:
                    checked += 1
                    found += key in self._sentences
        return found > 0 and found >= min_overlap * checked


def drop_leaks(splits: dict[str, list[dict]], index: SentenceIndex, min_overlap: float,
               corpus_checked: Collection[str]) -> tuple[dict[str, list[dict]], dict[str, dict[str, int]]]:
    """The splits without the examples the validator would flag, and per split the number
    dropped by reason. Order kept; an input repeated inside one split is not a leak (the
    validator compares splits), and a dropped example's input does not count as seen."""
    seen: set[str] = set()
    out, dropped = {}, {}
    for split in SPLITS:
        kept, here, n = [], set(), Counter()
        for rec in splits[split]:
            key = example_key(rec)
            if key is not None and key in seen:
                n[IN_EARLIER_SPLIT] += 1
            elif split in corpus_checked and index.contaminated(example_texts(rec), min_overlap):
                n[IN_CORPUS] += 1
            else:
                kept.append(rec)
                if key is not None:
                    here.add(key)
        seen |= here
        out[split], dropped[split] = kept, dict(sorted(n.items()))
    return out, dropped
