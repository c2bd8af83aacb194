"""Is a validation/test example inside the pretraining corpus?

Choice: a hash set of the corpus's normalized sentences. Every corpus sentence (paragraph breaks,
then blingfire, as the tokenize stage splits) with at least `min_words` words is casefolded,
reduced to its words (`rules.normalize_text`) and its hash stored with where it came from.
Building is one pass over the corpus (~100k sentences, a couple of seconds for ~15 MB); each
lookup is O(sentences of the example).

An example is contaminated when at least `min_overlap` of its sentences (those with `min_words`
words or more, over all its text fields) are corpus sentences. A fraction, not "any": news
articles share boilerplate sentences with related articles ("Mr X could face 85 years if
convicted..."), which does not put the test article in the corpus; a near-copy of it does. An
example of one sentence is contaminated when that sentence is in the corpus.

Why not substring search (Aho-Corasick over all task texts): it finds the same leaks when examples
are whole sentences or documents, which is how the built-in tasks are made, but costs a
dependency and more memory; sentence hashing also ignores spacing/punctuation differences such as
tokens joined with spaces. What it misses: a fragment shorter than a sentence, or text whose
sentence boundaries differ from the corpus's. `min_words` keeps short stock sentences
("Thank you very much.") from counting as leaks.
"""

from __future__ import annotations

from typing import Iterable

from bertops.text.sentences import split_sentences
from bertops.validation.rules import normalize_text


class SentenceIndex:
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

    def add(self, sentences: Iterable[str], file_key: str, line: int) -> None:
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
