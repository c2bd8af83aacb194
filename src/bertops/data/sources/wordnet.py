"""WordNet 3.0 synsets from Debian's wordnet-base (`usr/share/wordnet/data.{noun,verb,adj,adv}`).

A data line is `offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt pointers... | gloss`;
the gloss is a definition followed by quoted example sentences (`; "example"`). Files are
Latin-1; the licence header lines start with two spaces. nltk's reader would need nltk and
its own copy of the data, so the format is read here (it is one line per synset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

POS_FILES = ("noun", "verb", "adj", "adv")
_MARKER = re.compile(r"\((a|p|ip)\)$")  # adjective position markers: "galore(ip)"
_QUOTED = re.compile(r'"([^"]+)"')


@dataclass(frozen=True)
class Synset:
    id: str  # "<pos>.<offset>", e.g. "noun.02084071"
    lexname_num: int
    pos: str  # n, v, a, s, r
    words: tuple[str, ...]  # lemma forms with spaces, e.g. "domestic dog"
    definition: str
    examples: tuple[str, ...]


def parse_line(line: str, pos_file: str) -> Synset | None:
    """One synset from a data.* line; None for the licence header."""
    if not line.strip() or line.startswith("  "):
        return None
    data, _, gloss = line.partition(" | ")
    fields = data.split()
    offset, lexnum, ss_type, w_cnt = fields[0], int(fields[1]), fields[2], int(fields[3], 16)
    words = tuple(_MARKER.sub("", fields[4 + 2 * i]).replace("_", " ") for i in range(w_cnt))
    examples = tuple(e.strip() for e in _QUOTED.findall(gloss) if e.strip())
    definition = _QUOTED.sub("", gloss)
    definition = re.sub(r"(\s*;\s*)+$", "", re.sub(r";\s*(;\s*)+", "; ", definition.strip())).strip()
    return Synset(f"{pos_file}.{offset}", lexnum, ss_type, words, definition, examples)


def read_synsets(wordnet_dir: Path) -> list[Synset]:
    """All synsets, in file order (noun, verb, adj, adv)."""
    out = []
    for pos_file in POS_FILES:
        with open(Path(wordnet_dir) / f"data.{pos_file}", encoding="latin-1") as f:
            out.extend(s for s in (parse_line(line.rstrip("\n"), pos_file) for line in f) if s)
    return out


def licence_notice(wordnet_dir: Path) -> str:
    """The WordNet 3.0 licence, as printed at the top of every data file (it must travel with
    the data)."""
    lines = []
    with open(Path(wordnet_dir) / "data.noun", encoding="latin-1") as f:
        for line in f:
            if not line.startswith("  "):
                break
            lines.append(re.sub(r"^\s+\d+ ?", "", line.rstrip()))
    return "\n".join(lines).strip() + "\n"


def find_word(word: str, sentence: str) -> int:
    """Start of `word` in `sentence` as a whole word (case-insensitive); -1 if absent.

    Only the lemma form itself counts: inflected forms ("dogs") are not matched, so the
    answer span / target word is exactly one of the synset's lemmas. (Plain str.find, not a
    regex per word: there are ~50k distinct words and compiling each dominated the fetch.)
    """
    low, w = sentence.lower(), word.lower()
    if len(low) != len(sentence):  # lower() changed lengths: offsets would be wrong
        return -1
    i = low.find(w)
    while i >= 0:
        j = i + len(w)
        before = low[i - 1] if i else " "
        after = low[j] if j < len(low) else " "
        if not (before.isalnum() or before in "_'-") and not (after.isalnum() or after in "_-"):
            return i
        i = low.find(w, i + 1)
    return -1


@dataclass(frozen=True)
class Usage:
    """An example sentence of a synset in which one of its lemma forms occurs."""

    synset: Synset
    word: str  # the lemma, lower-case
    sentence: str
    start: int  # where the word occurs in the sentence


def usages(synsets: list[Synset]) -> list[Usage]:
    """Every (synset, example) whose sentence contains one of the synset's lemmas.

    When several lemmas occur, the longest wins ("domestic dog" over "dog").
    """
    out = []
    for s in synsets:
        for ex in s.examples:
            for word in sorted({w.lower() for w in s.words}, key=lambda w: (-len(w), w)):
                start = find_word(word, ex)
                if start >= 0:
                    out.append(Usage(s, word, ex, start))
                    break
    return out
