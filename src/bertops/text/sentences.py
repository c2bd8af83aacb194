"""Sentence splitting for pretraining segments (blingfire: offline, rule-based, fast C code).

A paragraph break ("\\n\\n", as in data/corpus) is always a sentence boundary. blingfire reads a
newline as a space but always ends a sentence at U+2029 (PARAGRAPH SEPARATOR), so paragraph
breaks become U+2029 and the whole document goes through blingfire in one call (per-paragraph
calls cost 2.5x more: the ctypes wrapper's overhead per call dominates short paragraphs).
"""

from __future__ import annotations

import re

import blingfire

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_PARAGRAPH_SEPARATOR = "\u2029"


def split_paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs of a document, in order."""
    return [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]


def split_sentences(text: str) -> list[str]:
    """Sentences of a document in order, stripped; none crosses a paragraph break."""
    marked = _PARAGRAPH_BREAK.sub(_PARAGRAPH_SEPARATOR, text)
    # blingfire returns the sentences separated by "\n"; str.strip() also drops the U+2029 marks
    sentences = [s for s in (x.strip() for x in blingfire.text_to_sentences(marked).split("\n")) if s]
    if not sentences and text.strip():  # blingfire returns "" on an internal error: keep the text
        sentences = [p.strip() for p in split_paragraphs(text)]
    return sentences
