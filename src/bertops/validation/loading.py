"""Read a JSON-lines file without stopping at the first bad line.

Unlike bertops.io.read_jsonl (which raises on the first problem, right for stages that trust
validated data), validation wants every bad line: each line is decoded as UTF-8 and parsed as a
JSON object on its own, and each failure is kept with its line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bertops.validation.results import Failure

VALID_UTF8 = "valid_utf8"
VALID_JSON = "valid_json"
JSON_OBJECT = "json_object"


@dataclass
class LoadedFile:
    path: str
    lines: list[int] = field(default_factory=list)  # line number of each record
    records: list[dict] = field(default_factory=list)
    n_lines: int = 0  # non-blank lines seen
    failures: list[Failure] = field(default_factory=list)


def _snippet(text: str, n: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n] + "…"


def load_jsonl(path: str | Path) -> LoadedFile:
    """Parse every line; blank lines are skipped (as bertops.io.read_jsonl does)."""
    out = LoadedFile(str(path))
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            out.n_lines += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                out.failures.append(Failure(out.path, VALID_UTF8,
                                            f"byte {e.start}: {raw[e.start:e.start + 4]!r} is not UTF-8",
                                            lineno))
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                out.failures.append(Failure(out.path, VALID_JSON,
                                            f"{e.msg} at column {e.colno}: {_snippet(line)!r}", lineno))
                continue
            if not isinstance(rec, dict):
                out.failures.append(Failure(out.path, JSON_OBJECT,
                                            f"a JSON {type(rec).__name__}, not an object", lineno))
                continue
            out.lines.append(lineno)
            out.records.append(rec)
    return out


def record_id(rec: dict) -> str | None:
    """The record's id as people see it (ids are strings by contract; others are shown as JSON)."""
    value = rec.get("id")
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)
