"""Batched serving (multitask.serving.predict_rows, what the MLflow pyfunc calls): the same answers
as one row at a time, for every task type and with padding in play, in ceil(features / batch)
encoder passes instead of one per row."""

from __future__ import annotations

import math
import random

import pytest
import torch

from bertops.config import TaskParams
from bertops.data import tasks as T
from bertops.errors import BertopsError
from bertops.model.multitask import (
    MAX_REQUEST_CHARS,
    MAX_ROWS_PER_REQUEST,
    MAX_TEXT_CHARS,
    MultiTaskModel,
    RequestError,
    check_rows,
    predict_rows,
)

TASK_PARAMS = {
    "sent": TaskParams(type="sequence_classification", path="x", text_fields=["text"], labels=["neg", "mid", "pos"],
                       max_seq_length=24),
    "pair": TaskParams(type="pair_classification", path="x", text_fields=["a", "b"], labels=[False, True],
                       max_seq_length=24),
    "ner": TaskParams(type="token_classification", path="x", labels=["class", "method"], max_seq_length=16),
    "qa": TaskParams(type="extractive_qa", path="x", max_seq_length=32, doc_stride=8, max_answer_length=5),
}
SPECS = [T.TaskSpec.from_params(n, tp) for n, tp in TASK_PARAMS.items()]
WORDS = ("the a film cat model query set dull witty long warm Ann Tuesday hammer objects use here sat "
         "gorgeous clever funny over under Django returns field value").split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _row(rng: random.Random, task: str) -> dict:
    """Lengths vary a lot, so every batch pads; ner rows may exceed max_seq_length (words cut),
    QA contexts span 1 to 5 doc_stride windows."""
    if task == "sent":
        return {"task": task, "text": _text(rng, 1, 30), "text_pair": None}
    if task == "pair":
        return {"task": task, "text": _text(rng, 1, 12), "text_pair": _text(rng, 1, 12)}
    if task == "ner":
        return {"task": task, "text": _text(rng, 1, 20), "text_pair": float("nan")}  # NaN: pandas' missing
    return {"task": task, "text": _text(rng, 1, 6) + "?", "text_pair": _text(rng, 3, 60) + "."}


def mixed_request(n: int, seed: int = 0) -> list[dict]:
    """n rows, the four task types interleaved in random order."""
    rng = random.Random(seed)
    return [_row(rng, rng.choice(list(TASK_PARAMS))) for _ in range(n)]


def build(encoder_dir, seed: int, specs: list[T.TaskSpec] = SPECS, **kwargs) -> MultiTaskModel:
    """A random model whose answers depend on the input: weights drawn with sd 0.4 (BERT's 0.02
    makes a tiny random encoder's [CLS] almost the same for every text, so every row would get the
    same label, and a batching bug that swaps rows would go unseen)."""
    torch.manual_seed(seed)
    model = MultiTaskModel.build(encoder_dir, specs, **kwargs).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, 0.4)
    return model


class PassCounter:
    """Counts forward passes of an encoder (a torch forward hook)."""

    def __init__(self, model: MultiTaskModel):
        self.n = 0
        self.handle = model.encoder.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.n += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def per_row(models: dict, rows: list[dict]) -> list[dict]:
    """The old serving path: one `predict_one` (one forward pass per feature) per row."""
    out = []
    for r in rows:
        pair = r["text_pair"]
        pair = None if pair is None or pair != pair else pair
        out.append(models[r["task"]].predict_one(r["task"], r["text"], pair))
    return out


def assert_same(batched: list[dict], single: list[dict], rows: list[dict]) -> None:
    assert len(batched) == len(single) == len(rows)
    for i, (b, s, r) in enumerate(zip(batched, single, rows)):
        where = f"row {i} ({r['task']})"
        assert b["prediction"] == s["prediction"], where
        assert b["score"] == pytest.approx(s["score"], rel=1e-5, abs=1e-5), where
        if r["task"] in ("sent", "pair"):
            assert b["label"] == s["label"] and b["scores"] == pytest.approx(s["scores"], abs=1e-5), where
        elif r["task"] == "ner":
            assert b["tags"] == s["tags"] and b["tokens"] == s["tokens"], where
            assert b["scores"] == pytest.approx(s["scores"], abs=1e-5), where
        else:
            assert (b["answer"], b["start"], b["end"]) == (s["answer"], s["start"], s["end"]), where
            assert b["answer"] == r["text_pair"][b["start"]:b["end"]], where


@pytest.mark.parametrize("feature_layers,batch_size", [("last", 7), ("last", 64), ("weighted_sum", 16)])
def test_mixed_request_batched_equals_row_by_row(encoder_dir, feature_layers, batch_size):
    model = build(encoder_dir, seed=1, feature_layers=feature_layers,
                  freeze_encoder=feature_layers != "last")
    rows = mixed_request(80)
    assert {r["task"] for r in rows} == set(TASK_PARAMS)
    single = per_row({t: model for t in model.tasks}, rows)
    batched = model.predict_rows(rows, batch_size=batch_size)
    assert_same(batched, single, rows)
    # the request exercises what batching could get wrong: more than one label / tag / window
    for task in ("sent", "pair"):
        assert len({b["prediction"] for b, r in zip(batched, rows) if r["task"] == task}) > 1
    assert len({t for b, r in zip(batched, rows) if r["task"] == "ner" for t in b["tags"]}) > 1
    assert len({b["start"] for b, r in zip(batched, rows) if r["task"] == "qa"}) > 3
    qa = [r for r in rows if r["task"] == "qa"]
    spec = model.tasks["qa"]
    windows = T.encode(model.tokenizer, spec, [(r["text"], r["text_pair"]) for r in qa])
    assert len(windows) > len(qa) + 10


def test_one_task_takes_ceil_n_over_batch_passes(encoder_dir):
    model = build(encoder_dir, seed=2)
    rows = [r for r in mixed_request(400, seed=3) if r["task"] == "sent"][:70]
    assert len(rows) == 70
    with PassCounter(model) as passes:
        model.predict_rows(rows, batch_size=16)
    assert passes.n == math.ceil(70 / 16) == 5
    with PassCounter(model) as passes:
        per_row({"sent": model}, rows)
    assert passes.n == 70  # what serving did before


def test_qa_windows_are_batched_and_reduced_per_example(encoder_dir):
    model = build(encoder_dir, seed=2)
    rows = [r for r in mixed_request(200, seed=4) if r["task"] == "qa"]
    spec = model.tasks["qa"]
    n_windows = len(T.encode(model.tokenizer, spec, [(r["text"], r["text_pair"]) for r in rows]))
    assert n_windows > 2 * len(rows)  # several windows per example
    with PassCounter(model) as passes:
        out = model.predict_rows(rows, batch_size=32)
    assert passes.n == math.ceil(n_windows / 32)
    assert len(out) == len(rows)
    assert_same(out, per_row({"qa": model}, rows), rows)


def expected_passes(model: MultiTaskModel, rows: list[dict], batch_size: int) -> int:
    """What a batched request costs: the sum over tasks of ceil(features / batch_size)."""
    total = 0
    for task, spec in model.tasks.items():
        inputs = [(r["text"], r["text_pair"]) if spec.task_type.pair_input else r["text"]
                  for r in rows if r["task"] == task]
        inputs = [T.normalize_input(spec, x) for x in inputs]
        total += math.ceil(len(T.encode(model.tokenizer, spec, inputs)) / batch_size)
    return total


def test_mixed_request_passes_are_per_task_ceilings(encoder_dir):
    model = build(encoder_dir, seed=2)
    rows = mixed_request(120, seed=5)
    assert {r["task"] for r in rows} == set(model.tasks)
    expected = expected_passes(model, rows, 32)
    with PassCounter(model) as passes:
        model.predict_rows(rows, batch_size=32)
    assert passes.n == expected < len(rows) / 2


def test_one_model_per_task_each_row_goes_to_its_model(encoder_dir):
    """finetune.mode single_task: the pyfunc serves {task: its own model}."""
    a, b = build(encoder_dir, seed=10), build(encoder_dir, seed=11)
    models = {"sent": a, "pair": a, "ner": b, "qa": b}
    rows = mixed_request(60, seed=6)
    with PassCounter(a) as pa, PassCounter(b) as pb:
        batched = predict_rows(models, rows, batch_size=64)
    assert pa.n == 2 and pb.n >= 2  # one pass per task of a; QA windows may need more than one
    assert_same(batched, per_row(models, rows), rows)
    other = per_row({t: a for t in models}, rows)  # the same rows all answered by model a differ
    assert any(x["score"] != pytest.approx(y["score"], abs=1e-5)
               for x, y, r in zip(batched, other, rows) if r["task"] in ("ner", "qa"))


def test_bad_rows_are_refused_by_index_before_any_pass(encoder_dir):
    model = build(encoder_dir, seed=2)
    rows = mixed_request(10, seed=7)
    with PassCounter(model) as passes:
        with pytest.raises(BertopsError, match=r"row 10: unknown task 'nope'"):
            model.predict_rows([*rows, {"task": "nope", "text": "x"}])
        with pytest.raises(BertopsError, match=r"row 1: text_pair is missing \(null\); task 'pair' "
                                               r"\(pair_classification\) needs text_pair"):
            model.predict_rows([rows[0], {"task": "pair", "text": "x", "text_pair": float("nan")}])
        with pytest.raises(BertopsError, match=r"row 0: text is missing \(null\)"):
            model.predict_rows([{"task": "sent", "text": None}])
        with pytest.raises(BertopsError, match="batch_size"):
            predict_rows({"sent": model}, rows[:1], batch_size=0)
    assert passes.n == 0
    assert model.predict_rows([]) == []


@pytest.mark.parametrize(("rows", "message"), [
    ([{"task": "sent", "text": "ok"}, {"task": "nope", "text": "x"}],
     r"^row 1: unknown task 'nope'; this model serves"),
    ([{"task": None, "text": "x"}], r"^row 0: task is missing \(null\)"),
    ([{"task": 7, "text": "x"}], r"^row 0: task must be a string, got int 7"),
    ([{"task": "sent"}], r"^row 0: text is missing \(null\)"),
    ([{"task": "sent", "text": float("nan")}], r"^row 0: text is missing \(null\)"),
    ([{"task": "ner", "text": " \t\n"}], r"^row 0: text is blank"),
    ([{"task": "sent", "text": 3.5}], r"^row 0: text must be a string, got float 3.5"),
    ([{"task": "ner", "text": ["a", "b"]}], r"^row 0: text must be a string, got list"),
    ([{"task": "qa", "text": "who?", "text_pair": None}],
     r"^row 0: text_pair is missing \(null\); task 'qa' \(extractive_qa\) needs text_pair \(the context\)"),
    ([{"task": "pair", "text": "a", "text_pair": ""}], r"^row 0: text_pair is blank; task 'pair'"),
    ([{"task": "pair", "text": "a", "text_pair": 1}], r"^row 0: text_pair must be a string, got int"),
    ([{"task": "sent", "text": "a", "text_pair": 1}], r"^row 0: text_pair must be a string or null, got int"),
    ([{"task": "sent", "text": "x" * (MAX_TEXT_CHARS + 1)}],
     rf"^row 0: text is {MAX_TEXT_CHARS + 1} characters, more than the limit of {MAX_TEXT_CHARS} \(MAX_TEXT_CHARS\)"),
    ([{"task": "sent", "text": "a"}] * (MAX_ROWS_PER_REQUEST + 1),
     rf"^request has {MAX_ROWS_PER_REQUEST + 1} rows, more than the limit of {MAX_ROWS_PER_REQUEST}"),
    ([{"task": "pair", "text": "x" * MAX_TEXT_CHARS, "text_pair": "y" * MAX_TEXT_CHARS}]
     * (MAX_REQUEST_CHARS // (2 * MAX_TEXT_CHARS) + 1),
     rf"^request has more than {MAX_REQUEST_CHARS} characters of text \(MAX_REQUEST_CHARS\) by row "
     rf"{MAX_REQUEST_CHARS // (2 * MAX_TEXT_CHARS)};"),
])
def test_malformed_rows_are_refused_naming_row_column_rule(encoder_dir, rows, message):
    """Each rule of check_rows, with the message a client gets (the pyfunc answers it with HTTP 400),
    before any forward pass; the limits hold exactly at the bound."""
    model = build(encoder_dir, seed=2)
    models = {name: model for name in TASK_PARAMS}
    with PassCounter(model) as passes:
        with pytest.raises(RequestError, match=message):
            predict_rows(models, rows)
    assert passes.n == 0
    assert issubclass(RequestError, BertopsError)


def test_rows_at_the_limits_are_accepted(encoder_dir):
    model = build(encoder_dir, seed=2)
    models = {name: model for name in TASK_PARAMS}
    check_rows(models, [{"task": "sent", "text": "a"}] * MAX_ROWS_PER_REQUEST)
    check_rows(models, [{"task": "sent", "text": "x" * MAX_TEXT_CHARS}] * (MAX_REQUEST_CHARS // MAX_TEXT_CHARS))
    check_rows(models, [{"task": "sent", "text": "a", "text_pair": float("nan")},
                        {"task": "ner", "text": "use it", "text_pair": "ignored for ner"}])
