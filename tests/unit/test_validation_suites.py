"""Great Expectations suites on tiny in-memory frames: each expectation reports the right rows."""

import pytest

from bertops.config import TaskParams, ValidateParams
from bertops.validation.loading import LoadedFile
from bertops.validation.suites import (
    FILE_SOURCE,
    GXRunner,
    build_frame,
    corpus_expectations,
    task_expectations,
    task_fields,
)


@pytest.fixture(scope="module")
def gx_runner():
    return GXRunner()


def loaded(*records, first_line=1):
    return LoadedFile("x.jsonl", lines=list(range(first_line, first_line + len(records))), records=list(records))


def failing(outcomes, rows):
    """{rule: [(file position, line), ...]} for the rules that failed."""
    return {o.rule: sorted(rows[i] for i, _ in o.unexpected) for o in outcomes if o.unexpected or o.error}


WIC = TaskParams(type="pair_classification", path="x", text_fields=["sentence1", "sentence2"],
                 labels=[False, True])


def test_pair_task_suite(gx_runner):
    good = {"id": "a", "sentence1": "s one", "sentence2": "s two", "label": True}
    train = loaded(good,
                   {**good, "id": "b", "label": 1},  # 1 == True in Python, but not a declared label
                   {**good, "id": "c", "label": "true"},
                   {**good, "id": "d", "sentence1": "  "},
                   {**good, "id": "e", "sentence2": None},
                   {**good, "id": "a"},  # duplicate id in this file
                   {"id": "g", "sentence1": 3, "sentence2": "x", "label": False})
    test = loaded({**good, "id": "b"})  # same id in another file: not this rule's business
    frame, rows = build_frame([train, test], task_fields(WIC), label_field="label")
    outcomes = gx_runner.run("t:wic", task_expectations(WIC), frame)
    assert failing(outcomes, rows) == {
        "in_label_set:label": [(0, 2), (0, 3)],
        "non_blank:sentence1": [(0, 4)],
        "not_null:sentence2": [(0, 5)],
        "unique:id": [(0, 1), (0, 6)],
        "is_str:sentence1": [(0, 7)],
    }
    by_rule = {o.rule: o for o in outcomes}
    label = by_rule["in_label_set:label"]
    assert "'1' not in declared set ['false', 'true']" in label.detail(label.unexpected[0][1])
    assert "'a' occurs more than once" in by_rule["unique:id"].detail(by_rule["unique:id"].unexpected[0][1])
    assert all(o.checked == 8 for o in outcomes)


def test_token_and_qa_suites_check_presence_and_types(gx_runner):
    ner = TaskParams(type="token_classification", path="x", label_field="ner_tags", labels=["class"])
    recs = loaded({"id": "a", "tokens": ["x"], "ner_tags": ["O"]},
                  {"id": "b", "tokens": "x y", "ner_tags": ["O"]},
                  {"id": "c", "ner_tags": ["O"]})
    frame, rows = build_frame([recs], task_fields(ner))
    assert failing(gx_runner.run("t:ner", task_expectations(ner), frame), rows) == {
        "is_list:tokens": [(0, 2)], "not_null:tokens": [(0, 3)]}

    qa = TaskParams(type="extractive_qa", path="x")
    good = {"id": "a", "title": "", "context": "c", "question": "q", "answers": {"text": ["c"], "answer_start": [0]}}
    recs = loaded(good, {**good, "id": "b", "context": ""}, {**good, "id": "c", "answers": [1]},
                  {k: v for k, v in good.items() if k != "title"} | {"id": "d"})
    frame, rows = build_frame([recs], task_fields(qa))
    assert failing(gx_runner.run("t:qa", task_expectations(qa), frame), rows) == {
        "non_blank:context": [(0, 2)], "is_dict:answers": [(0, 3)], "not_null:title": [(0, 4)]}


def test_corpus_suite(gx_runner):
    vp = ValidateParams(corpus_min_chars=10, corpus_max_chars=50)
    doc = {"id": "austen/1", "source": "austen", "text": "It is a truth. Universally."}
    austen = loaded(doc, {**doc, "id": "austen/2", "source": "bbc"}, {**doc, "id": "austen/3", "text": "short"},
                    {**doc, "id": "austen/4", "text": "x" * 51}, {**doc, "id": "austen/1"})
    bbc = loaded({**doc, "id": "bbc/1", "source": "bbc"}, first_line=1)
    frame, rows = build_frame([austen, bbc], ["id", "source", "text"], per_file={FILE_SOURCE: ["austen", "bbc"]})
    outcomes = gx_runner.run("corpus", corpus_expectations(vp), frame)
    assert failing(outcomes, rows) == {
        "source_matches_file:source": [(0, 2)],
        "length_between:text": [(0, 3), (0, 4)],
        "unique:id": [(0, 1), (0, 5)],
    }
    length = {o.rule: o for o in outcomes}["length_between:text"]
    assert length.detail("short") == "length 5 outside [10, 50]"


def test_empty_frame_runs_nothing(gx_runner):
    frame, rows = build_frame([], task_fields(WIC), label_field="label")
    assert rows == [] and gx_runner.run("t:wic-empty", task_expectations(WIC), frame) == []
