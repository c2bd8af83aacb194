"""Task data: feature building per type, QA windows, best-span choice, record checks."""

from __future__ import annotations

import json
import math
import random

import pytest

from bertops.config import TaskParams
from bertops.data import tasks as T
from bertops.errors import DataError


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from bertops.train.finetune import resolve_init_dir

    return AutoTokenizer.from_pretrained(resolve_init_dir("minilm"))


def spec(type_, **kw):
    defaults = {"sequence_classification": {"text_fields": ["text"], "labels": ["neg", "pos"]},
                "pair_classification": {"text_fields": ["a", "b"], "labels": [False, True]},
                "token_classification": {"labels": ["class", "method"], "label_field": "ner_tags"},
                "extractive_qa": {}}[type_]
    return T.TaskSpec.from_params("t", TaskParams(type=type_, path="x", **{**defaults, **kw}))


def test_labels_as_strings_and_bio_expansion():
    assert spec("pair_classification").labels == ["false", "true"]
    assert spec("token_classification").labels == ["O", "B-class", "I-class", "B-method", "I-method"]
    # a list that already is a tag set is kept in its order (integer tags index it)
    assert T.bio_tags(["O", "B-PER", "I-PER"]) == ["O", "B-PER", "I-PER"]


def test_pair_features_have_segment_ids(tokenizer):
    s = spec("pair_classification", max_seq_length=32)
    f = T.encode(tokenizer, s, [("the cat sat", "a dog ran off")], ["true"])[0]
    sep = tokenizer.sep_token_id
    first_sep = f["input_ids"].index(sep)
    assert f["input_ids"][0] == tokenizer.cls_token_id and f["input_ids"][-1] == sep
    assert set(f["token_type_ids"][:first_sep + 1]) == {0}
    assert set(f["token_type_ids"][first_sep + 1:]) == {1}
    assert f["labels"] == 1


def test_classification_truncates_to_max_seq_length(tokenizer):
    s = spec("sequence_classification", max_seq_length=8)
    f = T.encode(tokenizer, s, ["word " * 50], ["pos"])[0]
    assert len(f["input_ids"]) == 8 and f["labels"] == 1


def test_token_labels_only_on_first_subtoken(tokenizer):
    s = spec("token_classification", max_seq_length=32)
    words = ["call", "QuerySet", "refreshes"]
    tags = ["O", "B-class", "B-method"]
    f = T.encode(tokenizer, s, [words], [tags])[0]
    pieces = tokenizer.convert_ids_to_tokens(f["input_ids"])
    assert pieces.count("[CLS]") == 1 and len(pieces) > len(words) + 2  # some words split
    labeled = [(p, lab) for p, lab in zip(pieces, f["labels"]) if lab != T.IGNORE_INDEX]
    assert [lab for _, lab in labeled] == [s.labels.index(t) for t in tags]
    assert [p for p, _ in labeled] == [tokenizer.tokenize(w)[0] for w in words]
    for p, lab in zip(pieces, f["labels"]):
        if p.startswith("##") or p in ("[CLS]", "[SEP]"):
            assert lab == T.IGNORE_INDEX
    # decoding back to words takes each word's first sub-token
    assert T.word_tags(f["word_ids"], [max(lab, 0) for lab in f["labels"]], s.labels, 3) == tags


def test_token_words_cut_by_max_length_are_predicted_O(tokenizer):
    s = spec("token_classification", max_seq_length=6)
    words = ["a", "b", "c", "d", "e", "f", "g"]
    f = T.encode(tokenizer, s, [words], [["B-class"] * 7])[0]
    assert len(f["input_ids"]) == 6
    tags = T.word_tags(f["word_ids"], [1] * 6, s.labels, len(words))
    assert tags == ["B-class"] * 4 + ["O"] * 3


def _qa_example():
    filler = " ".join(f"word{i}" for i in range(60))
    context = f"{filler} the defined term is serendipity indeed . {filler}"
    answer = "serendipity"
    return "Which word means: luck?", context, {"text": [answer], "answer_start": [context.index(answer)]}


def test_qa_windows_keep_answer_positions(tokenizer):
    s = spec("extractive_qa", max_seq_length=48, doc_stride=16, max_answer_length=5)
    q, ctx, ans = _qa_example()
    feats = T.encode(tokenizer, s, [(q, ctx)], [ans])
    assert len(feats) > 3 and {f["example_index"] for f in feats} == {0}
    inside = [f for f in feats if f["start_positions"] > 0]
    outside = [f for f in feats if f["start_positions"] == 0]
    assert inside and outside
    for f in inside:
        a, b = f["offset_mapping"][f["start_positions"]][0], f["offset_mapping"][f["end_positions"]][1]
        assert ctx[a:b] == "serendipity"
    for f in outside:  # answer not wholly in the window -> [CLS]
        assert f["end_positions"] == 0
        spans = [o for o in f["offset_mapping"] if o is not None]
        assert not (spans[0][0] <= ans["answer_start"][0] and ans["answer_start"][0] + 11 <= spans[-1][1])
    # windows overlap by doc_stride tokens and every window holds the question
    for f in feats:
        assert len(f["input_ids"]) <= 48
        assert f["offset_mapping"][1] is None  # question tokens are not context


def test_qa_long_question_is_truncated(tokenizer):
    s = spec("extractive_qa", max_seq_length=32, doc_stride=8)
    feats = T.encode(tokenizer, s, [("why " * 60, "short context here")])
    assert all(len(f["input_ids"]) <= 32 for f in feats)
    assert any(o is not None for o in feats[0]["offset_mapping"])


def test_best_span_rules_and_across_windows():
    ctx = "abc def ghi jkl"
    # window 1: tokens 0=[CLS] 1=question 2="abc" 3="def"; window 2: 0=[CLS] 1=question 2="ghi" 3="jkl"
    w1 = {"offset_mapping": [None, None, (0, 3), (4, 7)],
          "start_logits": [9.0, 9.0, 1.0, 0.5], "end_logits": [9.0, 9.0, 0.0, 2.0]}
    w2 = {"offset_mapping": [None, None, (8, 11), (12, 15)],
          "start_logits": [0.0, 0.0, 3.0, 8.0], "end_logits": [0.0, 0.0, 2.5, -5.0]}
    # [CLS]/question spans (logits 18) are never chosen; in w2 jkl..ghi (8+2.5) has end < start
    best = T.best_span([w1], ctx, max_answer_length=5)
    assert (best["text"], best["logit_score"]) == ("abc def", 3.0)
    best = T.best_span([w1, w2], ctx, max_answer_length=5)
    assert (best["text"], best["logit_score"], best["start"], best["end"]) == ("ghi", 5.5, 8, 11)
    # max_answer_length=1 forbids the two-token span of w1
    assert T.best_span([w1], ctx, max_answer_length=1)["text"] == "def"
    assert T.best_span([], ctx, 5) == {"text": "", "score": 0.0, "logit_score": None, "start": -1, "end": -1}


def _softmax(xs):
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


def test_best_span_score_is_the_span_probability():
    """The score is softmax(start)[s] x softmax(end)[e] over the window's tokens, in [0, 1]; the span
    chosen is still the highest logit sum, and within a window a better span has a higher probability."""
    ctx = "abc def ghi jkl"
    w1 = {"offset_mapping": [None, None, (0, 3), (4, 7)],
          "start_logits": [9.0, 9.0, 1.0, 0.5], "end_logits": [9.0, 9.0, 0.0, 2.0]}
    w2 = {"offset_mapping": [None, None, (8, 11), (12, 15)],
          "start_logits": [0.0, 0.0, 3.0, 8.0], "end_logits": [0.0, 0.0, 2.5, -5.0]}
    best = T.best_span([w1], ctx, max_answer_length=5)  # abc..def: start token 2, end token 3
    assert best["score"] == pytest.approx(_softmax(w1["start_logits"])[2] * _softmax(w1["end_logits"])[3])
    worse = T.best_span([w1], ctx, max_answer_length=1)  # def..def: logits 0.5 + 2.0 < 1.0 + 2.0
    assert worse["score"] == pytest.approx(_softmax(w1["start_logits"])[3] * _softmax(w1["end_logits"])[3])
    assert 0.0 < worse["score"] < best["score"] < 1.0
    both = T.best_span([w1, w2], ctx, max_answer_length=5)  # ghi, from w2: w2's own softmax
    assert both["text"] == "ghi"
    assert both["score"] == pytest.approx(_softmax(w2["start_logits"])[2] * _softmax(w2["end_logits"])[2])
    # huge logits do not overflow; a certain span is probability 1 at most
    sure = {"offset_mapping": [None, (0, 3)], "start_logits": [-1e4, 1e4], "end_logits": [-1e4, 1e4]}
    assert T.best_span([sure], ctx, 5)["score"] == pytest.approx(1.0)
    rng = random.Random(0)
    for _ in range(50):  # random windows: always a probability, and the same span as the logit sum picks
        n = rng.randint(3, 12)
        w = {"offset_mapping": [None] + [(i, i + 1) for i in range(n - 1)],
             "start_logits": [rng.gauss(0, 5) for _ in range(n)], "end_logits": [rng.gauss(0, 5) for _ in range(n)]}
        out = T.best_span([w], "x" * n, max_answer_length=4)
        assert 0.0 <= out["score"] <= 1.0
        spans = [(w["start_logits"][s] + w["end_logits"][e], s, e)
                 for s in range(1, n) for e in range(s, min(n, s + 4))]
        _, s, e = max(spans)
        assert (out["start"], out["end"]) == (s - 1, e)


def test_postprocess_groups_windows_by_example():
    feats = [{"example_index": 0, "offset_mapping": [None, (0, 1)]},
             {"example_index": 1, "offset_mapping": [None, (0, 2)]},
             {"example_index": 1, "offset_mapping": [None, (2, 4)]}]
    out = T.postprocess_qa(feats, [[0, 1], [0, 1], [0, 5]], [[0, 1], [0, 1], [0, 5]], ["xy", "abcd"], 3)
    assert [o["text"] for o in out] == ["x", "cd"]


def _write(tmp_path, split, recs):
    (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_load_records_checks_labels_and_fields(tmp_path):
    tp = TaskParams(type="pair_classification", path=str(tmp_path), text_fields=["a", "b"], labels=[False, True])
    _write(tmp_path, "train", [{"id": "1", "a": "x", "b": "y", "label": True}])
    assert T.load_records(tp, "train", "p")[0]["id"] == "1"
    _write(tmp_path, "train", [{"id": "1", "a": "x", "b": "y", "label": "maybe"}])
    with pytest.raises(DataError, match="label is one of"):
        T.load_records(tp, "train", "p")
    _write(tmp_path, "train", [{"id": "7", "a": "x", "label": True}])
    with pytest.raises(DataError, match=r"record 7.*has field 'b'"):
        T.load_records(tp, "train", "p")
    with pytest.raises(DataError, match="split file exists"):
        T.load_records(tp, "validation", "p")


def test_load_records_checks_qa_answer_offsets_and_tags(tmp_path):
    tp = TaskParams(type="extractive_qa", path=str(tmp_path))
    _write(tmp_path, "train", [{"id": "q", "question": "?", "context": "hello world",
                                "answers": {"text": ["world"], "answer_start": [0]}}])
    with pytest.raises(DataError, match="answer_start"):
        T.load_records(tp, "train")
    tp = TaskParams(type="token_classification", path=str(tmp_path), labels=["class"], label_field="tags")
    _write(tmp_path, "train", [{"id": "t", "tokens": ["a", "b"], "tags": ["O", "B-func"]}])
    with pytest.raises(DataError, match="tag set"):
        T.load_records(tp, "train")


def test_normalize_input_accepts_records_and_plain_forms():
    s = spec("pair_classification")
    assert T.normalize_input(s, {"a": "x", "b": "y", "label": True}) == ("x", "y")
    assert T.normalize_input(s, ["x", "y"]) == ("x", "y")
    assert T.normalize_input(spec("token_classification"), "a b  c") == ["a", "b", "c"]
    with pytest.raises(Exception, match="pair"):
        T.normalize_input(s, "just one text")
