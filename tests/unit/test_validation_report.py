"""The summary (DVC metrics) and the self-contained HTML report, from a hand-built result."""

import json
import re

from bertops.validation.report import render_report
from bertops.validation.results import FileReport, ValidationResult


def make_result() -> ValidationResult:
    corpus = FileReport(key="corpus/austen", path="data/corpus/austen.jsonl", kind="corpus", records=3, lines=3)
    corpus.add("not_null:text", "great_expectations", 3)
    train = FileReport(key="tasks/wic/train", path="data/tasks/wic/train.jsonl", kind="task", task="wic",
                       split="train", records=4, lines=5, class_balance={"true": 3, "false": 1})
    train.add("valid_json", "python", 5)
    train.fail("valid_json", "python", "Expecting value <here>", line=4)
    train.add("in_label_set:label", "great_expectations", 4)
    train.fail("in_label_set:label", "great_expectations", "'1' not in declared set", line=2, record_id="w-2")
    for i in range(12):
        train.fail("bio_tags", "python", f"bad tag {i}", line=10 + i, record_id=f"t{i}")
    return ValidationResult(files=[corpus, train], notes=["tasks/extra is not a declared task"])


def test_summary_counts_rules_and_first_failure():
    summary = make_result().summary()
    json.dumps(summary)  # JSON-able, for DVC metrics
    assert summary["success"] is False
    assert (summary["files"], summary["files_failed"], summary["records"], summary["failures"]) == (2, 1, 7, 14)
    wic = summary["per_file"]["tasks/wic/train"]
    assert wic["rules"]["in_label_set:label"] == {"checked": 4, "failed": 1}
    assert wic["class_balance"] == {"false": 1, "true": 3}
    assert summary["per_file"]["corpus/austen"]["success"] is True
    assert summary["rules"]["bio_tags"]["failed"] == 12
    # the earliest failing line of the first failing file, with its id
    assert summary["first_failure"] == {"file": "data/tasks/wic/train.jsonl", "record": "id 'w-2', line 2",
                                        "rule": "in_label_set:label", "detail": "'1' not in declared set"}


def test_report_is_self_contained_and_shows_failures():
    page = render_report(make_result(), n_examples=10)
    assert page.startswith("<!DOCTYPE html>")
    # offline: no scripts, no external styles, fonts or images
    assert "<script" not in page and "<link" not in page and not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "Expecting value &lt;here&gt;" in page  # escaped, not markup
    assert "id &#x27;w-2&#x27;, line 2" in page
    assert "bad tag 9" in page and "bad tag 10" not in page and "… and 2 more" in page
    assert 'style="width:75.0%"' in page and 'style="width:25.0%"' in page  # class balance bars
    assert "<details><summary>1 rule, all passed</summary>" in page  # a passing file folds away
    assert "tasks/extra is not a declared task" in page
    assert page == render_report(make_result(), n_examples=10)  # deterministic bytes for DVC
