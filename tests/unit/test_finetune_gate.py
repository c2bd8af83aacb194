"""The registry gate's examples are held out of epoch selection (bertops.train.finetune.gate_split)."""

from __future__ import annotations

import json
import random

import pytest

from bertops.config import load_params
from bertops.train.finetune import SINGLE_TASK_MANIFEST, gate_split, validation_parts


def _records(n: int) -> list[dict]:
    return [{"id": f"ex-{i}", "text": f"sentence {i}", "label": i % 2} for i in range(n)]


def test_selection_and_gate_are_disjoint_and_cover_validation():
    records = _records(2000)
    selection, gate = gate_split(records, 0.5)
    sel_ids, gate_ids = {r["id"] for r in selection}, {r["id"] for r in gate}
    assert not sel_ids & gate_ids
    assert sel_ids | gate_ids == {r["id"] for r in records}
    assert 900 < len(gate) < 1100  # about half
    assert 150 < len(gate_split(records, 0.1)[1]) < 250


def test_gate_membership_is_a_property_of_the_example():
    # not of the order, the seed or the other records: an example stays on its side across runs
    records = _records(500)
    _, gate = gate_split(records, 0.5)
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    assert {r["id"] for r in gate_split(shuffled, 0.5)[1]} == {r["id"] for r in gate}
    assert {r["id"] for r in gate_split(records[:100], 0.5)[1]} == {r["id"] for r in gate} & {
        r["id"] for r in records[:100]}
    # a larger fraction only adds examples to the gate
    assert {r["id"] for r in gate} < {r["id"] for r in gate_split(records, 0.7)[1]}
    # records without an id are keyed by their content
    no_id = [{"text": f"t{i}"} for i in range(200)]
    assert gate_split(no_id, 0.5) == gate_split(list(no_id), 0.5)
    assert 0 < len(gate_split(no_id, 0.5)[1]) < 200


def test_validation_parts_caps_each_part_and_refuses_an_empty_gate(tmp_path):
    task = tmp_path / "t"
    task.mkdir()
    recs = [{"id": f"r{i}", "text": f"words {i}", "label": "a" if i % 2 else "b"} for i in range(60)]
    (task / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    tasks = {"tasks.t": {"type": "sequence_classification", "path": str(task), "text_fields": ["text"],
                         "labels": ["a", "b"]}}
    params = load_params("params.yaml", {**tasks, "finetune.max_eval_examples_per_task": 10})
    selection, gate = validation_parts(params, "t", seed=1)
    assert len(selection) == len(gate) == 10
    assert not {r["id"] for r in selection} & {r["id"] for r in gate}
    # the gate sample does not depend on the seed (comparable across runs); selection's may
    assert validation_parts(params, "t", seed=2)[1] == gate

    (task / "validation.jsonl").write_text(json.dumps(recs[0]) + "\n")
    from bertops.errors import BertopsError

    with pytest.raises(BertopsError, match="gate"):
        validation_parts(params, "t", seed=1)


def test_gate_fraction_must_leave_both_parts():
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError):
            load_params("params.yaml", {"finetune.gate_fraction": bad})
    params = load_params("params.yaml")
    assert params.register_.gate_metric == "gate.score"
    assert params.register_.gate_metrics_file == "artifacts/finetune/metrics.json"


def test_the_served_model_reads_the_same_single_task_manifest():
    from bertops.model.multitask import layout

    pyfunc_model = pytest.importorskip("bertops.tracking.pyfunc_model")
    assert pyfunc_model.single_task_dirs is layout.single_task_dirs
    assert SINGLE_TASK_MANIFEST is layout.SINGLE_TASK_MANIFEST  # what finetune writes


def test_task_model_dir_follows_the_single_task_manifest(tmp_path):
    from bertops.errors import BertopsError
    from bertops.model.multitask.layout import single_task_dirs, task_model_dir

    assert single_task_dirs(tmp_path) is None and task_model_dir(tmp_path, "wic") == tmp_path
    (tmp_path / SINGLE_TASK_MANIFEST).write_text('{"models": {"wic": "w", "topic": "t"}}')
    assert single_task_dirs(tmp_path) == {"wic": tmp_path / "w", "topic": tmp_path / "t"}
    assert task_model_dir(tmp_path, "wic") == tmp_path / "w"
    with pytest.raises(BertopsError, match="no model for task 'qa'"):
        task_model_dir(tmp_path, "qa")
