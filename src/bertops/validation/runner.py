"""Validate everything under data/: the pretraining corpus, then every declared task, split by split.

Order matters twice: the corpus is read first, because it fills the sentence index the
contamination check of the tasks' validation/test splits looks up; and splits are read
train -> validation -> test, so a record seen in an earlier split is reported in the later one.
Failures of the corpus-wide and cross-split rules are attributed to the later record.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bertops.data.leaks import SentenceIndex, is_contaminated
from bertops.model.multitask.task_types import NOT_CHECKED, get_task_type
from bertops.text.sentences import split_sentences
from bertops.validation import rules
from bertops.validation.loading import JSON_OBJECT, VALID_JSON, VALID_UTF8, LoadedFile, load_jsonl, record_id
from bertops.validation.results import Failure, FileReport, ValidationResult
from bertops.validation.suites import (
    FILE_SOURCE,
    GXRunner,
    Outcome,
    build_frame,
    corpus_expectations,
    task_expectations,
    task_fields,
    task_label_field,
)

if TYPE_CHECKING:
    from bertops.config import Params, TaskParams, ValidateParams

SPLITS = ("train", "validation", "test")


def _snippet(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _load(report: FileReport, path: Path) -> LoadedFile | None:
    """Parse a file into the report; None when there is nothing to check further."""
    if not path.is_file():
        report.add(rules.FILE_EXISTS, "python", 1, [Failure(report.path, rules.FILE_EXISTS, "no such file")])
        return None
    report.add(rules.FILE_EXISTS, "python", 1)
    loaded = load_jsonl(path)
    report.lines, report.records = loaded.n_lines, len(loaded.records)
    for rule in (VALID_UTF8, VALID_JSON, JSON_OBJECT):
        report.add(rule, "python", loaded.n_lines, [f for f in loaded.failures if f.rule == rule])
    empty = [] if loaded.n_lines else [Failure(report.path, rules.FILE_NOT_EMPTY, "the file has no records")]
    report.add(rules.FILE_NOT_EMPTY, "python", 1, empty)
    return loaded if loaded.records else None


def _add_outcomes(reports: list[FileReport], files: list[LoadedFile], rows: list[tuple[int, int]],
                  outcomes: list[Outcome]) -> None:
    """Spread the outcomes of one GX run over several files back to each file's report."""
    ids = [{line: record_id(rec) for line, rec in zip(f.lines, f.records)} for f in files]
    for out in outcomes:
        per_file: list[list[Failure]] = [[] for _ in files]
        if out.error is not None:
            for pos, report in enumerate(reports):
                per_file[pos].append(Failure(report.path, out.rule,
                                             f"expectation {out.expectation} raised: {out.error}"))
        for row, value in out.unexpected:
            pos, line = rows[int(row)]
            per_file[pos].append(Failure(reports[pos].path, out.rule, out.detail(value), line, ids[pos].get(line)))
        for pos, report in enumerate(reports):
            report.add(out.rule, "great_expectations", len(files[pos].records), per_file[pos])


def _validate_corpus(params: Params, gx: GXRunner, index: SentenceIndex, result: ValidationResult,
                     on_file: Callable[[FileReport], None]) -> None:
    vp = params.validate_
    corpus_dir = Path(params.data.dir) / "corpus"
    present = sorted(p.stem for p in corpus_dir.glob("*.jsonl"))
    sources = list(params.data.corpus_sources) + [s for s in present if s not in params.data.corpus_sources]
    reports, files, names = [], [], []
    for source in sources:
        path = corpus_dir / f"{source}.jsonl"
        report = FileReport(key=f"corpus/{source}", path=str(path), kind="corpus")
        result.files.append(report)
        loaded = _load(report, path)
        if loaded is not None:
            reports.append(report)
            files.append(loaded)
            names.append(source)
    frame, rows = build_frame(files, ["id", "source", "text"], per_file={FILE_SOURCE: names})
    _add_outcomes(reports, files, rows, gx.run("corpus", corpus_expectations(vp), frame))

    first_seen: dict[int, tuple[str, int]] = {}  # hash(normalized document) -> (file key, line)
    duplicates: list[tuple[FileReport, int, str | None, tuple[str, int]]] = []
    for report, loaded in zip(reports, files):
        checked = 0
        for line, rec in zip(loaded.lines, loaded.records):
            detail = rules.control_character_error(rec)
            if detail:
                report.fail(rules.NO_CONTROL_CHARACTERS, "python", detail, line, record_id(rec))
            text = rec.get("text")
            if not isinstance(text, str):
                continue  # reported by not_null/is_str
            checked += 1
            sentences = split_sentences(text)
            if len(sentences) < vp.corpus_min_sentences:
                report.fail(rules.MIN_SENTENCES, "python",
                            f"{len(sentences)} sentence(s), need at least {vp.corpus_min_sentences}",
                            line, record_id(rec))
            index.add(sentences, report.key, line)
            doc_key = hash(rules.normalize_text(text))
            if doc_key in first_seen:
                duplicates.append((report, line, record_id(rec), first_seen[doc_key]))
            else:
                first_seen[doc_key] = (report.key, line)
        report.add(rules.NO_CONTROL_CHARACTERS, "python", len(loaded.records))
        report.add(rules.MIN_SENTENCES, "python", checked)
        report.add(rules.DUPLICATE_DOCUMENT, "python", checked)
    if len(duplicates) > vp.max_duplicate_documents:
        for report, line, rid, (key, first_line) in duplicates:
            report.fail(rules.DUPLICATE_DOCUMENT, "python",
                        f"same text as {key} line {first_line} ({len(duplicates)} duplicate documents, "
                        f"max_duplicate_documents={vp.max_duplicate_documents})", line, rid)
    elif duplicates:
        result.notes.append(f"{len(duplicates)} duplicate corpus document(s), within "
                            f"max_duplicate_documents={vp.max_duplicate_documents}")
    for report in result.files:
        if report.kind == "corpus":
            on_file(report)


def _record_rules(report: FileReport, task: TaskParams, loaded: LoadedFile) -> None:
    """The per-record rules GX cannot express, as the task's type defines them (`record_rules`)."""
    task_rules = get_task_type(task.type).record_rules(task)
    checked = dict.fromkeys((r.name for r in task_rules), 0)
    for line, rec in zip(loaded.lines, loaded.records):
        for rule in task_rules:
            detail = rule.check(rec)
            if detail is NOT_CHECKED:
                continue  # e.g. a field of the wrong type, reported by the column checks
            checked[rule.name] += 1
            if detail:
                report.fail(rule.name, "python", detail, line, record_id(rec))
    for name, n in checked.items():
        report.add(name, "python", n)


def _validate_task(name: str, task: TaskParams, vp: ValidateParams, gx: GXRunner, index: SentenceIndex,
                   result: ValidationResult, on_file: Callable[[FileReport], None]) -> None:
    reports, files = [], []
    for split in SPLITS:
        path = Path(task.path) / f"{split}.jsonl"
        report = FileReport(key=f"tasks/{name}/{split}", path=str(path), kind="task", task=name, split=split)
        result.files.append(report)
        loaded = _load(report, path)
        if loaded is not None:
            reports.append(report)
            files.append(loaded)
    frame, rows = build_frame(files, task_fields(task), task_label_field(task))
    _add_outcomes(reports, files, rows, gx.run(f"task:{name}", task_expectations(task), frame))

    seen_ids: dict[str, tuple[str, int]] = {}  # id -> (split, line) in the first split that has it
    seen_keys: dict[int, tuple[str, int]] = {}  # hash(normalized example input) -> (split, line)
    for report, loaded in zip(reports, files):
        split = report.split
        _record_rules(report, task, loaded)
        report.class_balance = rules.class_balance(task.type, loaded.records, task.label_field)
        report.balance_unit = get_task_type(task.type).balance_unit
        check_leaks = split in vp.contamination_splits
        ids_here: dict[str, tuple[str, int]] = {}
        keys_here: dict[int, tuple[str, int]] = {}
        for line, rec in zip(loaded.lines, loaded.records):
            rid = record_id(rec)
            detail = rules.control_character_error(rec)
            if detail:
                report.fail(rules.NO_CONTROL_CHARACTERS, "python", detail, line, rid)
            if rid is not None:
                if rid in seen_ids:
                    other = seen_ids[rid]
                    report.fail(rules.ID_IN_ONE_SPLIT, "python", f"id also in {other[0]} (line {other[1]})",
                                line, rid)
                ids_here.setdefault(rid, (split, line))
            key = rules.example_key(task.type, rec, task.text_fields, task.tokens_field)
            if key is not None:
                h = hash(key)
                if h in seen_keys:
                    other = seen_keys[h]
                    report.fail(rules.TEXT_IN_ONE_SPLIT, "python",
                                f"same input as {other[0]} line {other[1]}: {_snippet(key)!r}", line, rid)
                keys_here.setdefault(h, (split, line))
            if check_leaks:
                texts = rules.example_texts(task.type, rec, task.text_fields, task.tokens_field)
                found, checked, first = index.overlap(texts)
                if is_contaminated(found, checked, vp.contamination_min_overlap):
                    sentence, (corpus_key, corpus_line) = first
                    report.fail(rules.NOT_IN_CORPUS, "python",
                                f"{found}/{checked} of its sentences are in the corpus, e.g. "
                                f"{_snippet(sentence)!r} in {corpus_key} line {corpus_line}", line, rid)
        report.add(rules.NO_CONTROL_CHARACTERS, "python", len(loaded.records))
        report.add(rules.ID_IN_ONE_SPLIT, "python", len(loaded.records))
        report.add(rules.TEXT_IN_ONE_SPLIT, "python", len(loaded.records))
        if check_leaks:
            report.add(rules.NOT_IN_CORPUS, "python", len(loaded.records))
        for k, v in ids_here.items():
            seen_ids.setdefault(k, v)
        for k, v in keys_here.items():
            seen_keys.setdefault(k, v)
    for report in result.files[-len(SPLITS):]:
        on_file(report)


def validate_data(params: Params, on_file: Callable[[FileReport], None] | None = None) -> ValidationResult:
    """Run every rule on every file; never raises for bad data (the caller decides)."""
    vp = params.validate_
    on_file = on_file or (lambda report: None)
    result = ValidationResult()
    gx = GXRunner()
    index = SentenceIndex(vp.contamination_min_words)
    _validate_corpus(params, gx, index, result, on_file)
    declared_dirs = set()
    for name, task in params.tasks.items():
        declared_dirs.add(Path(task.path).resolve())
        _validate_task(name, task, vp, gx, index, result, on_file)
    tasks_dir = Path(params.data.dir) / "tasks"
    if tasks_dir.is_dir():
        for d in sorted(p for p in tasks_dir.iterdir() if p.is_dir() and p.resolve() not in declared_dirs):
            result.notes.append(f"{d} is not a declared task (params.yaml `tasks:`): not validated")
    return result
