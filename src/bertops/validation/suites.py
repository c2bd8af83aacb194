"""Great Expectations 1.x suites per file type, run on a pandas frame of JSONL records.

One ephemeral context, one pandas data source, one whole-dataframe batch definition; a suite per
file type (the corpus, each task) built from params, run once over all files of that type (all
corpus files; a task's three splits). GX's `unexpected_index_list` gives the failing rows, which
map back to (file, line). Each expectation carries its rule name in `meta["rule"]`
("<check>:<field>"), which is how results are reported (file, record, rule, detail).

Typing tricks, so that each bad value is reported once, by the right rule:
- `<field>__json`: labels as JSON text, so the set check tells `true` from `1` (True == 1 in Python).
- `<field>__str`: only the string values, for the blank/length checks (a non-string is reported
  by `is_str:<field>` and not again as "blank").
A task's per-field checks come from its task type (`TaskType.columns`, bertops.model.multitask.
task_types), translated here into expectations (`column_expectations`).
GX is imported inside functions: the CLI imports this package at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bertops.model.multitask.task_types import Column, get_task_type
from bertops.validation.loading import LoadedFile
from bertops.validation.rules import label_json

if TYPE_CHECKING:
    import pandas as pd

    from bertops.config import TaskParams, ValidateParams

JSON_SUFFIX = "__json"
STR_SUFFIX = "__str"
ID_IN_FILE = "id__in_file"  # (file position, id): ids are unique per file; across splits is a Python rule
FILE_SOURCE = "source__of_file"  # corpus/<source>.jsonl: the source every record must name


@dataclass
class Outcome:
    """One expectation's result: its rule, how many rows it saw, the failing (row, value) pairs."""

    rule: str
    expectation: str
    kwargs: dict
    checked: int
    unexpected: list[tuple[int, Any]]
    error: str | None = None  # the expectation itself raised

    def detail(self, value: Any) -> str:
        kind = self.expectation
        shown = _short(value)
        if kind == "expect_column_values_to_not_be_null":
            return "missing or null"
        if kind == "expect_column_values_to_be_of_type":
            return f"{shown} has type {type(value).__name__}, expected {self.kwargs['type_']}"
        if kind == "expect_column_pair_values_to_be_equal":
            return f"{_short(value[0] if isinstance(value, tuple) else value)} differs from the file name"
        if kind == "expect_column_values_to_be_in_set":
            return f"{shown} not in declared set {self.kwargs['value_set']}"
        if kind == "expect_column_values_to_be_unique":
            shown = _short(value[1] if isinstance(value, tuple) else value)
            return f"{shown} occurs more than once in the file"
        if kind == "expect_column_values_to_match_regex":
            return "empty or blank"
        if kind == "expect_column_value_lengths_to_be_between":
            n = len(value) if hasattr(value, "__len__") else "?"
            return f"length {n} outside [{self.kwargs.get('min_value')}, {self.kwargs.get('max_value')}]"
        return f"unexpected value {shown}"


def _short(value: Any, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


# ---- expectations -------------------------------------------------------------------------------

def _required_str(field: str, non_blank: bool = True) -> list:
    import great_expectations as gx

    E = gx.expectations
    out = [E.ExpectColumnValuesToNotBeNull(column=field, meta={"rule": f"not_null:{field}"}),
           E.ExpectColumnValuesToBeOfType(column=field, type_="str", meta={"rule": f"is_str:{field}"})]
    if non_blank:
        out.append(E.ExpectColumnValuesToMatchRegex(column=field + STR_SUFFIX, regex=r"\S",
                                                    meta={"rule": f"non_blank:{field}"}))
    return out


def _required_of_type(field: str, type_: str) -> list:
    import great_expectations as gx

    E = gx.expectations
    return [E.ExpectColumnValuesToNotBeNull(column=field, meta={"rule": f"not_null:{field}"}),
            E.ExpectColumnValuesToBeOfType(column=field, type_=type_, meta={"rule": f"is_{type_}:{field}"})]


def _id_expectations() -> list:
    import great_expectations as gx

    return [*_required_str("id", non_blank=True),
            gx.expectations.ExpectColumnValuesToBeUnique(column=ID_IN_FILE, meta={"rule": "unique:id"})]


def corpus_expectations(vp: ValidateParams) -> list:
    import great_expectations as gx

    E = gx.expectations
    return [
        *_id_expectations(),
        *_required_str("source", non_blank=False),
        E.ExpectColumnPairValuesToBeEqual(column_A="source" + STR_SUFFIX, column_B=FILE_SOURCE,
                                          ignore_row_if="either_value_is_missing",
                                          meta={"rule": "source_matches_file:source"}),
        *_required_str("text", non_blank=False),
        E.ExpectColumnValueLengthsToBeBetween(column="text" + STR_SUFFIX, min_value=vp.corpus_min_chars,
                                              max_value=vp.corpus_max_chars,
                                              meta={"rule": "length_between:text"}),
    ]


def column_expectations(column: Column, labels: list) -> list:
    """GX expectations for one of a task type's declarative column checks (`TaskType.columns`)."""
    import great_expectations as gx

    E = gx.expectations
    field, kind = column.field, column.kind
    if kind in ("text", "str"):
        return _required_str(field, non_blank=kind == "text")
    if kind == "label":
        return [E.ExpectColumnValuesToNotBeNull(column=field, meta={"rule": f"not_null:{field}"}),
                E.ExpectColumnValuesToBeInSet(column=field + JSON_SUFFIX, value_set=[label_json(x) for x in labels],
                                              meta={"rule": f"in_label_set:{field}"})]
    return _required_of_type(field, kind)  # a Python type name: list, dict, float, int, ...


def task_expectations(task: TaskParams) -> list:
    out = _id_expectations()
    for column in get_task_type(task.type).columns(task):
        out += column_expectations(column, task.labels)
    return out


def task_fields(task: TaskParams) -> list[str]:
    """The record fields a task's frame holds (missing keys become nulls there)."""
    return ["id", *(column.field for column in get_task_type(task.type).columns(task))]


def task_label_field(task: TaskParams) -> str | None:
    """The field whose values get a JSON column (`<field>__json`) for the label-set check."""
    return next((c.field for c in get_task_type(task.type).columns(task) if c.kind == "label"), None)


# ---- frames and runs ----------------------------------------------------------------------------

def build_frame(files: list[LoadedFile], fields: list[str], label_field: str | None = None,
                per_file: dict[str, list] | None = None) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    """All records of `files` in one frame (one GX run per file type: GX's cost is per run, not
    per row), one object column per field with values untouched, plus the derived `__str` /
    `__json` columns and `per_file` columns (one value per file, repeated on its rows).
    Returns the frame and, per row, (position of its file in `files`, line number)."""
    import pandas as pd

    rows = [(pos, line) for pos, loaded in enumerate(files) for line in loaded.lines]
    records = [rec for loaded in files for rec in loaded.records]
    columns: dict[str, list] = {}
    for field in fields:
        values = [rec.get(field) for rec in records]
        columns[field] = values
        columns[field + STR_SUFFIX] = [v if isinstance(v, str) else None for v in values]
    if label_field is not None:
        columns[label_field + JSON_SUFFIX] = [label_json(rec.get(label_field)) for rec in records]
    columns[ID_IN_FILE] = [(pos, rec.get("id")) if isinstance(rec.get("id"), str) else None
                           for (pos, _), rec in zip(rows, records)]
    for name, values in (per_file or {}).items():
        columns[name] = [values[pos] for pos, _ in rows]
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()}), rows


class GXRunner:
    """An ephemeral GX context reused for every file (suites are built once per file type)."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        # a progress bar per run is noise in a pipeline log
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self.context.data_sources.add_pandas("bertops_data").add_dataframe_asset("jsonl_records")
        self._batch = asset.add_batch_definition_whole_dataframe("all_records")
        self._definitions: dict[str, Any] = {}

    def validation_definition(self, name: str, expectations: list):
        if name not in self._definitions:
            gx = self._gx
            suite = self.context.suites.add(gx.ExpectationSuite(name=name))
            for expectation in expectations:
                suite.add_expectation(expectation)
            self._definitions[name] = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=self._batch, suite=suite))
        return self._definitions[name]

    def run(self, name: str, expectations: list, frame: pd.DataFrame) -> list[Outcome]:
        """Outcomes whose `unexpected` holds (row position in `frame`, value)."""
        if frame.empty:  # nothing to check; the file rules report empty files
            return []
        definition = self.validation_definition(name, expectations)
        result = definition.run(batch_parameters={"dataframe": frame},
                                result_format={"result_format": "COMPLETE"})
        outcomes = []
        for res in result.results:
            cfg = res.expectation_config
            info = res.exception_info or {}
            error = info.get("exception_message") if info.get("raised_exception") else None
            r = res.result or {}
            unexpected = list(zip(r.get("unexpected_index_list") or [], r.get("unexpected_list") or []))
            outcomes.append(Outcome(rule=cfg.meta["rule"], expectation=cfg.type, kwargs=dict(cfg.kwargs),
                                    checked=len(frame), unexpected=unexpected, error=error))
        return outcomes
