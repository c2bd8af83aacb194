"""The plain-Python validation rules (what Great Expectations has no expectation for), on tiny inputs.

The token and QA rules belong to their task types (bertops.model.multitask.task_types)."""

import pytest

from bertops.data.leaks import SentenceIndex
from bertops.model.multitask.task_types import span, token
from bertops.validation import rules
from bertops.validation.loading import JSON_OBJECT, VALID_JSON, VALID_UTF8, load_jsonl

TYPES = {"class", "method"}


@pytest.mark.parametrize("tags", [
    [],
    ["O", "O"],
    ["B-class", "I-class", "I-class", "O", "B-method"],
    ["B-class", "B-class", "I-class"],  # two adjacent entities of one type
])
def test_bio_accepts_well_formed_iob2(tags):
    assert token.bio_error(tags, TYPES) is None


@pytest.mark.parametrize("tags, fragment", [
    (["I-class"], "tag 0 'I-class' follows 'O'"),
    (["O", "I-method"], "tag 1 'I-method' follows 'O'"),
    (["B-class", "I-method"], "tag 1 'I-method' follows 'B-class'"),
    (["B-function"], "type 'function' not in declared"),
    (["X-class"], "is not O, B-TYPE or I-TYPE"),
    (["B-"], "is not O, B-TYPE or I-TYPE"),
    (["O", 3], "not a list of strings"),
])
def test_bio_rejects(tags, fragment):
    detail = token.bio_error(tags, TYPES)
    assert detail is not None and fragment in detail


def test_declared_entity_types_from_types_or_tag_set():
    assert token.declared_entity_types(["class", "method"]) == {"class", "method"}
    assert token.declared_entity_types(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]) == {"PER", "LOC"}


def test_tokens_and_tags_alignment():
    assert token.tokens_error(["a", "b"]) is None
    assert "empty list" in token.tokens_error([])
    assert "token 1" in token.tokens_error(["a", " "])
    assert "token 0" in token.tokens_error([5])
    assert token.tags_length_error(["a", "b"], ["O", "O"]) is None
    assert token.tags_length_error(["a", "b"], ["O"]) == "2 tokens but 1 tags"


CONTEXT = "The cat sat on the mat."


@pytest.mark.parametrize("answers", [
    {"text": ["cat"], "answer_start": [4]},
    {"text": ["cat", "the mat"], "answer_start": [4, 15]},
])
def test_answer_span_matches_context(answers):
    assert span.answers_error(answers) is None
    assert span.answer_span_error(CONTEXT, answers) is None


@pytest.mark.parametrize("answers, fragment", [
    ({"text": ["cat"], "answer_start": [5]}, "'cat' != context[5:8] 'at '"),
    ({"text": ["mat."], "answer_start": [21]}, "lies outside the context"),
    ({"text": ["cat"], "answer_start": [-1]}, "lies outside the context"),
    ({"text": [""], "answer_start": [0]}, "answer 0 is empty"),
])
def test_answer_span_rejects(answers, fragment):
    assert span.answers_error(answers) is None
    assert fragment in span.answer_span_error(CONTEXT, answers)


@pytest.mark.parametrize("answers, fragment", [
    ([4], "not an object"),
    ({"text": "cat", "answer_start": [4]}, "answers.text is not a list"),
    ({"text": ["cat"], "answer_start": [True]}, "answer_start is not a list of integers"),  # True == 1 in Python
    ({"text": ["cat"], "answer_start": [4, 5]}, "1 answer texts but 2"),
    ({"text": [], "answer_start": []}, "no answer"),
])
def test_answers_format_rejects(answers, fragment):
    assert fragment in span.answers_error(answers)


def test_label_json_tells_bool_from_int_and_string():
    assert rules.label_json(True) == "true"
    assert rules.label_json(1) == "1"
    assert rules.label_json("true") == '"true"'
    assert len({rules.label_json(v) for v in (True, 1, "true", 1.0)}) == 4


def test_normalize_text_ignores_case_spacing_and_punctuation():
    assert rules.normalize_text("Use the  Model class , please!") == rules.normalize_text("use the Model class, please")
    assert rules.normalize_text("a b") != rules.normalize_text("ab")


def test_count_sentences_splits_paragraphs_and_sentences():
    assert rules.count_sentences("One thing happened. Then another.") == 2
    assert rules.count_sentences("A heading without a stop\n\nA paragraph.") == 2
    assert rules.count_sentences("Just one sentence here.") == 1
    assert rules.count_sentences("") == 0


def test_example_key_per_task_type():
    pair = {"sentence1": "A b.", "sentence2": "C d."}
    assert rules.example_key("pair_classification", pair, ["sentence1", "sentence2"], "tokens") == "a b || c d"
    swapped = {"sentence1": "C d.", "sentence2": "A b."}
    assert rules.example_key("pair_classification", swapped, ["sentence1", "sentence2"], "tokens") != "a b || c d"
    tokens = {"tokens": ["Use", "Model", "."]}
    assert rules.example_key("token_classification", tokens, [], "tokens") == "use model"
    qa = {"question": "Q?", "context": "C."}
    assert rules.example_key("extractive_qa", qa, [], "tokens") == "q || c"
    assert rules.example_key("sequence_classification", {"text": None}, ["text"], "tokens") is None


def test_class_balance():
    recs = [{"label": True}, {"label": False}, {"label": True}, {"label": None}]
    assert rules.class_balance("pair_classification", recs, "label") == {"true": 2, "false": 1}
    tags = [{"ner_tags": ["B-class", "I-class", "O", "B-method"]}, {"ner_tags": ["B-class"]}]
    assert rules.class_balance("token_classification", tags, "ner_tags") == {"class": 2, "method": 1}
    assert rules.class_balance("extractive_qa", [{"answers": {}}], "label") is None


def test_load_jsonl_reports_every_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"id": "a"}\n\n{"id": "b\xff"}\n{"id": \n[1, 2]\n{"id": "c"}\n')
    loaded = load_jsonl(path)
    assert loaded.lines == [1, 6] and [r["id"] for r in loaded.records] == ["a", "c"]
    assert loaded.n_lines == 5  # the blank line is skipped
    assert [(f.rule, f.line) for f in loaded.failures] == [(VALID_UTF8, 3), (VALID_JSON, 4), (JSON_OBJECT, 5)]
    assert "\\xff" in loaded.failures[0].detail


def test_sentence_index_overlap():
    index = SentenceIndex(min_words=4)
    index.add(["The committee met on Tuesday to vote.", "Thanks a lot.", "It rained all day in London."],
              "corpus/news", 7)
    found, checked, first = index.overlap(["the committee met on tuesday, to vote!"])
    assert (found, checked) == (1, 1) and first[1] == ("corpus/news", 7)
    # short sentences are neither indexed nor checked
    assert index.overlap(["Thanks a lot."])[:2] == (0, 0)
    found, checked, _ = index.overlap(["It rained all day in London. Nobody came to the party at all."])
    assert (found, checked) == (1, 2)
    assert index.overlap(["A brand new sentence nobody wrote before."])[:2] == (0, 1)
    # tokens joined with spaces match the prose they came from
    assert index.overlap([" ".join(["It", "rained", "all", "day", "in", "London", "."])])[0] == 1
