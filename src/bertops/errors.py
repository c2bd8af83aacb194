"""Errors meant for people: they name the file, the record and the rule that was broken."""

from __future__ import annotations


class BertopsError(Exception):
    """A user-facing error; the CLI prints it without a traceback and exits non-zero."""


class DataError(BertopsError):
    """Bad input data: names the file, the record and the rule."""

    def __init__(self, file: str, record: str | int | None, rule: str, detail: str = ""):
        self.file, self.record, self.rule, self.detail = str(file), record, rule, detail
        where = f"{file}" + (f", record {record}" if record is not None else "")
        super().__init__(f"{where}: rule '{rule}' broken" + (f": {detail}" if detail else ""))
