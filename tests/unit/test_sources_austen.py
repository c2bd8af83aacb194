"""The R serialization reader and chapter splitter, on blobs serialized by hand here."""

import gzip
import struct
import zlib

import pytest

from bertops.data.sources import austen
from bertops.errors import BertopsError

# A minimal XDR writer for the types R uses in a lazy-load database (R Internals, 1.8).
HEADER = b"X\n" + struct.pack(">3i", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"


def i32(*xs):
    return struct.pack(f">{len(xs)}i", *xs)


def charsxp(s):
    raw = s.encode("utf-8")
    return i32(9 | (1 << 15), len(raw)) + raw  # UTF8 level bit


class Writer:
    def __init__(self):
        self.symbols = []

    def symbol(self, name):
        if name in self.symbols:  # REFSXP: index packed in the flags
            return i32(255 | ((self.symbols.index(name) + 1) << 8))
        self.symbols.append(name)
        return i32(1) + charsxp(name)

    def names_attr(self, names):
        return (i32(2 | 1024) + self.symbol("names") + i32(16, len(names))
                + b"".join(charsxp(n) for n in names) + i32(254))

    def strsxp(self, items):
        return i32(16, len(items)) + b"".join(i32(9, -1) if s is None else charsxp(s) for s in items)

    def named_list(self, names, items):
        return i32(19 | 512, len(items)) + b"".join(items) + self.names_attr(names)

    def intsxp(self, *xs):
        return i32(13, len(xs)) + i32(*xs)


def lazyload_db(tmp_path, variables: dict[str, list]):
    blobs, offsets = b"", []
    for lines in variables.values():
        payload = HEADER + Writer().strsxp(lines)
        blob = struct.pack(">i", len(payload)) + zlib.compress(payload)
        offsets.append((len(blobs), len(blob)))
        blobs += blob
    w = Writer()
    index = w.named_list(
        ["variables", "references", "compressed"],
        [w.named_list(list(variables), [w.intsxp(o, n) for o, n in offsets]),
         i32(254), i32(10, 1, 1)])
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(HEADER + index))
    (tmp_path / "Rdata.rdb").write_bytes(blobs)
    return tmp_path / "Rdata.rdx", tmp_path / "Rdata.rdb"


NOVEL = ["TITLE", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "",
         "It is a truth universally", "acknowledged.", "", "Second paragraph.", "",
         "Chapter 2", "", "Next chapter text.", None, "END OF VOLUME I"]


def test_unserialize_named_list_with_refs_and_na():
    w = Writer()
    data = HEADER + w.named_list(["a", "b"], [w.strsxp(["x", None]), w.named_list(["c"], [w.intsxp(7)])])
    out = austen.unserialize(data)
    assert out == [["x", None], [[7]]]
    assert out.attrs["names"] == ["a", "b"]
    assert out[1].attrs["names"] == ["c"]  # second "names" symbol came through a REFSXP


def test_unserialize_rejects_non_xdr():
    with pytest.raises(BertopsError, match="XDR"):
        austen.unserialize(b"A\n...")


def test_read_lazyload_db_roundtrip(tmp_path):
    rdx, rdb = lazyload_db(tmp_path, {"emma": NOVEL, "persuasion": ["CHAPTER 1", "One. Two."]})
    db = austen.read_lazyload_db(rdx, rdb)
    assert db == {"emma": NOVEL, "persuasion": ["CHAPTER 1", "One. Two."]}


def test_chapters_split_and_join_lines():
    chapters = austen.chapters(NOVEL)
    assert chapters == ["It is a truth universally acknowledged.\n\nSecond paragraph.", "Next chapter text."]


def test_documents_ids(tmp_path):
    rdx, rdb = lazyload_db(tmp_path, {"persuasion": ["CHAPTER 1", "One. Two."], "emma": NOVEL})
    docs = austen.documents(rdx, rdb)
    assert [d for d, _ in docs] == ["austen/emma/ch001", "austen/emma/ch002", "austen/persuasion/ch001"]
