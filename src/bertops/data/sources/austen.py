"""Jane Austen's six novels from Debian's r-cran-janeaustenr (R lazy-load database).

`Rdata.rdx` (gzip) is a serialized R index: a named list of (offset, length) into `Rdata.rdb`;
each blob there is a 4-byte length + zlib of one serialized character vector (one element
per text line). No Python package reads R serialization without pulling in R or heavy deps,
so a small reader of the XDR format (only the types this package uses) lives here.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

from bertops.errors import BertopsError

# R SEXP type codes (R Internals, "Serialization Formats")
NILSXP, SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 254, 1, 2, 9, 10, 13, 14, 16, 19
REFSXP = 255
HAS_ATTR, HAS_TAG = 1 << 9, 1 << 10
NA_INT = -(2**31)


class RVector(list):
    """An R vector/list; `attrs` holds its attributes (e.g. "names")."""

    attrs: dict


def unserialize(data: bytes):
    """Decode an R XDR serialization (format 2 or 3) into Python lists/str/int/None."""
    if data[:2] != b"X\n":
        raise BertopsError("austen: not an R XDR serialization (expected 'X\\n' header)")
    pos = 2
    refs: list = []

    def ints(n):
        nonlocal pos
        out = struct.unpack_from(f">{n}i", data, pos)
        pos += 4 * n
        return out

    version = ints(3)[0]
    if version == 3:  # native encoding name
        pos += 4 + ints(1)[0]

    def item():
        nonlocal pos
        (flags,) = ints(1)
        kind = flags & 0xFF
        if kind == NILSXP:
            return None
        if kind == REFSXP:
            return refs[(flags >> 8 or ints(1)[0]) - 1]
        if kind == SYMSXP:
            refs.append(item())
            return refs[-1]
        if kind == LISTSXP:  # pairlist: read as {tag: value}
            out = {}
            while kind == LISTSXP:
                if flags & HAS_ATTR:
                    item()
                tag = item() if flags & HAS_TAG else len(out)
                out[tag] = item()
                (flags,) = ints(1)  # the cdr: the next cell, or NILSXP at the end
                kind = flags & 0xFF
            if kind != NILSXP:
                raise BertopsError("austen: dotted pairlist in R serialization is not supported")
            return out
        if kind == CHARSXP:
            (n,) = ints(1)
            if n == -1:
                return None
            pos += n
            return data[pos - n:pos].decode("latin-1" if flags & (1 << 14) else "utf-8")
        (n,) = ints(1)
        if kind in (INTSXP, LGLSXP):
            vec = RVector(None if v == NA_INT else v for v in ints(n))
        elif kind == REALSXP:
            vec = RVector(struct.unpack_from(f">{n}d", data, pos))
            pos += 8 * n
        elif kind in (STRSXP, VECSXP):
            vec = RVector(item() for _ in range(n))
        else:
            raise BertopsError(f"austen: unsupported R type {kind} in serialization")
        vec.attrs = item() if flags & HAS_ATTR else {}
        return vec

    return item()


def read_lazyload_db(rdx: Path, rdb: Path) -> dict[str, list]:
    """Every variable of an R lazy-load database, by name."""
    index = unserialize(gzip.decompress(Path(rdx).read_bytes()))
    variables = index[0]  # a named list of (offset, length)
    blob = Path(rdb).read_bytes()
    out = {}
    for name, (offset, length) in zip(variables.attrs["names"], variables):
        chunk = blob[offset:offset + length]
        out[name] = unserialize(zlib.decompress(chunk[4:]))
    return out


CHAPTER_RE = re.compile(r"^\s*chapter\s+([0-9]+|[ivxlcdm]+)\b\.?", re.IGNORECASE)


def chapters(lines: list[str | None]) -> list[str]:
    """Split one novel (text lines, blank line between paragraphs) into chapter texts.

    Text before the first chapter heading (title, author, volume marks) is dropped;
    "VOLUME"/"END OF ..." lines are not prose and are skipped.
    """
    out, paras, para, seen = [], [], [], False

    def end_para():
        if para:
            paras.append(" ".join(para))
            para.clear()

    def end_chapter():
        end_para()
        if seen and paras:
            out.append("\n\n".join(paras))
        paras.clear()

    for raw in lines:
        line = (raw or "").strip()
        if CHAPTER_RE.match(line):
            end_chapter()
            seen = True
        elif not line:
            end_para()
        elif re.match(r"^(VOLUME|END OF|THE END|FINIS)\b", line):
            end_para()
        elif seen:
            para.append(line)
    end_chapter()
    return out


def documents(rdx: Path, rdb: Path) -> list[tuple[str, str]]:
    """(id, text) per chapter, e.g. ("austen/emma/ch001", ...), novels in name order."""
    docs = []
    for name, lines in sorted(read_lazyload_db(rdx, rdb).items()):
        for i, text in enumerate(chapters(lines), 1):
            docs.append((f"austen/{name}/ch{i:03d}", text))
    return docs
