"""What validation found, in one uniform shape for both engines (Great Expectations and plain Python).

Every broken rule is a `Failure` naming the file, the record (id and line number), the rule and a
detail; a `FileReport` counts, per rule, how many records were checked and how many failed, and
keeps a few failing examples for the HTML report. `ValidationResult.summary()` is the DVC metrics
file: deterministic (no timings), so re-running on the same data gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Engine = Literal["great_expectations", "python"]


@dataclass(frozen=True)
class Failure:
    file: str  # the path as read, so an error message points at a real file
    rule: str
    detail: str = ""
    line: int | None = None  # 1-based line in the JSONL file; None for file-level failures
    record_id: str | None = None

    @property
    def record(self) -> str | None:
        """How DataError names the record: "id 'x', line 5", "line 5", or None (whole file)."""
        parts = []
        if self.record_id is not None:
            parts.append(f"id {self.record_id!r}")
        if self.line is not None:
            parts.append(f"line {self.line}")
        return ", ".join(parts) or None

    def sort_key(self) -> tuple:
        return (self.line or 0, self.rule)


@dataclass
class RuleStats:
    rule: str
    engine: Engine
    checked: int = 0  # records the rule looked at
    failures: list[Failure] = field(default_factory=list)
    note: str = ""  # e.g. "3 duplicates, within max_duplicate_documents=5"

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def success(self) -> bool:
        return not self.failures


@dataclass
class FileReport:
    key: str  # stable name relative to the data dir, without ".jsonl": "tasks/sentiment/train"
    path: str
    kind: Literal["corpus", "task"]
    task: str | None = None
    split: str | None = None
    records: int = 0  # records parsed (JSON objects)
    lines: int = 0  # non-blank lines
    rules: dict[str, RuleStats] = field(default_factory=dict)
    class_balance: dict[str, int] | None = None
    balance_unit: str = "examples per class"
    notes: list[str] = field(default_factory=list)

    def rule(self, name: str, engine: Engine) -> RuleStats:
        if name not in self.rules:
            self.rules[name] = RuleStats(name, engine)
        return self.rules[name]

    def add(self, name: str, engine: Engine, checked: int, failures: list[Failure] = ()) -> RuleStats:
        stats = self.rule(name, engine)
        stats.checked += checked
        stats.failures.extend(failures)
        return stats

    def fail(self, rule: str, engine: Engine, detail: str, line: int | None = None,
             record_id: str | None = None) -> None:
        """Record one failing record (already counted as checked by the caller)."""
        self.rule(rule, engine).failures.append(Failure(self.path, rule, detail, line, record_id))

    @property
    def failures(self) -> list[Failure]:
        out = [f for stats in self.rules.values() for f in stats.failures]
        return sorted(out, key=Failure.sort_key)

    @property
    def n_failures(self) -> int:
        return sum(s.failed for s in self.rules.values())

    @property
    def success(self) -> bool:
        return self.n_failures == 0


@dataclass
class ValidationResult:
    files: list[FileReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_failures(self) -> int:
        return sum(f.n_failures for f in self.files)

    @property
    def success(self) -> bool:
        return self.n_failures == 0

    def first_failure(self) -> Failure | None:
        """The earliest failure in file order (corpus, then tasks as declared), then line order."""
        for report in self.files:
            failures = report.failures
            if failures:
                return failures[0]
        return None

    def summary(self) -> dict:
        rules: dict[str, dict[str, int]] = {}
        files = {}
        for report in self.files:
            file_rules = {}
            for name, stats in sorted(report.rules.items()):
                file_rules[name] = {"checked": stats.checked, "failed": stats.failed}
                agg = rules.setdefault(name, {"files": 0, "checked": 0, "failed": 0, "files_failed": 0})
                agg["files"] += 1
                agg["checked"] += stats.checked
                agg["failed"] += stats.failed
                agg["files_failed"] += int(not stats.success)
            entry = {"records": report.records, "lines": report.lines, "failures": report.n_failures,
                     "success": report.success, "rules": file_rules}
            if report.class_balance is not None:
                entry["class_balance"] = dict(sorted(report.class_balance.items()))
            files[report.key] = entry
        first = self.first_failure()
        return {
            "success": self.success,
            "files": len(self.files),
            "files_failed": sum(not f.success for f in self.files),
            "records": sum(f.records for f in self.files),
            "failures": self.n_failures,
            "first_failure": None if first is None else {
                "file": first.file, "record": first.record, "rule": first.rule, "detail": first.detail},
            "rules": dict(sorted(rules.items())),
            "per_file": files,
        }
