"""bertops.data.leaks: the one definition of a leak (text_in_one_split, not_in_pretraining_corpus),
used by the fetch to drop held-out examples and by `validate` to reject them; on tiny in-memory
records, each checked against the value it must have (not against another copy of the code)."""

import pytest
import yaml

from bertops.data import fetch, leaks
from bertops.text.sentences import split_sentences
from bertops.validation import rules
from bertops.validation import runner as validation_runner


@pytest.mark.parametrize("text,normalized", [
    ("Hello,  World!", "hello world"),
    ("It's the Model.save() method —  see django.db.models.", "it s the model save method see django db models"),
    ("ÉCOLE  école\n\nÜber", "école école über"),  # casefold, not ASCII folding
    ("tokens , joined . by spaces", "tokens joined by spaces"),
    ("   ", ""),
    ("C'est l'été; 3.5% of __init__", "c est l été 3 5 of __init__"),  # \w keeps underscores
    ("STRASSE Straße", "strasse strasse"),  # casefold: ß is ss
])
def test_normalize_text(text, normalized):
    assert leaks.normalize_text(text) == normalized


RECORDS = [  # (task type, text fields, record, its key, its prose)
    ("sequence_classification", ["text"], {"id": "a", "text": "A Short text. Another one!", "label": "x"},
     "a short text another one", ["A Short text. Another one!"]),
    ("pair_classification", ["sentence1", "sentence2"],
     {"id": "b", "sentence1": "the bank of the river", "sentence2": "a Bank loan", "word": "bank", "label": True},
     "the bank of the river || a bank loan", ["the bank of the river", "a Bank loan"]),
    ("token_classification", [], {"id": "c", "tokens": ["Call", "Model.save", "now", "."],
                                  "ner_tags": ["O", "B-method", "O", "O"]},
     "call model save now", ["Call Model.save now ."]),
    ("extractive_qa", [], {"id": "d", "title": "t", "question": "Which word means: x?", "context": "A bank. B.",
                           "answers": {"text": ["bank"], "answer_start": [2]}},
     "which word means x || a bank b", ["A bank. B.", "Which word means: x?"]),
]


@pytest.mark.parametrize("task_type,fields,rec,key,prose", RECORDS, ids=[r[0] for r in RECORDS])
def test_example_key_and_texts(task_type, fields, rec, key, prose):
    assert leaks.example_key(task_type, rec, fields, "tokens") == key
    assert leaks.example_texts(task_type, rec, fields, "tokens") == prose


def test_example_key_without_usable_input_is_none():
    assert leaks.example_key("sequence_classification", {"text": None}, ["text"], "tokens") is None
    assert leaks.example_key("sequence_classification", {"text": " ?! "}, ["text"], "tokens") is None
    assert leaks.example_key("token_classification", {"tokens": "not a list"}, [], "tokens") is None


def test_validate_uses_these_very_functions():
    # one implementation: validate's rules are these objects, not copies that could drift
    assert rules.example_key is leaks.example_key and rules.example_texts is leaks.example_texts
    assert rules.normalize_text is leaks.normalize_text
    assert validation_runner.SentenceIndex is leaks.SentenceIndex


def test_builtin_task_layouts_are_params_yaml_tasks():
    # the fetch reads its records by TASK_LAYOUTS; validate reads the same files by params.yaml
    tasks = yaml.safe_load(open("params.yaml"))["tasks"]
    assert set(fetch.TASK_LAYOUTS) == set(fetch.TASK_SOURCES) == set(tasks)
    for name, (task_type, text_fields) in fetch.TASK_LAYOUTS.items():
        assert (tasks[name]["type"], tuple(tasks[name].get("text_fields", ()))) == (task_type, text_fields)
        assert tasks[name].get("tokens_field", "tokens") == "tokens"


CORPUS = ["The quick brown fox jumps over the lazy dog today. Short one.\n\n"
          "Every good boy deserves fudge and a little more cake. Another sentence that is long enough to count here."]


def _index(min_words=8):
    index = leaks.SentenceIndex(min_words)
    for line, doc in enumerate(CORPUS, 1):
        index.add(split_sentences(doc), "corpus/x", line)
    return index


def test_sentence_index_verdicts():
    index = _index()
    assert len(index) == 3  # "Short one." is under min_words
    same_other_case = ["THE quick brown fox   jumps over the lazy dog, today!"]
    assert index.overlap(same_other_case) == (1, 1, ("THE quick brown fox   jumps over the lazy dog, today!",
                                                     ("corpus/x", 1)))
    half = ["The quick brown fox jumps over the lazy dog today. A brand new sentence that nobody wrote before."]
    assert index.overlap(half)[:2] == (1, 2)
    assert index.contaminated(half, 0.5) and not index.contaminated(half, 0.51)
    new = ["A brand new sentence that nobody wrote before. And yet another one nobody has seen, surely."]
    assert index.overlap(new)[:2] == (0, 2) and not index.contaminated(new, 0.01)
    assert index.overlap(["Short one."])[:2] == (0, 0)  # under min_words: never checked, never a leak
    two_fields = ["Every good boy deserves fudge and a little more cake.", "Two fields: the second is new and long."]
    assert index.overlap(two_fields)[:2] == (1, 2)


@pytest.mark.parametrize("found,checked,min_overlap,leak", [
    (0, 0, 0.5, False), (0, 3, 0.5, False), (1, 2, 0.5, True), (1, 3, 0.5, False), (1, 1, 1.0, True),
    (2, 3, 1.0, False), (1, 10, 0.1, True)])
def test_is_contaminated(found, checked, min_overlap, leak):
    assert leaks.is_contaminated(found, checked, min_overlap) is leak


def _rec(i, text):
    return {"id": i, "text": text, "label": "x"}


def _drop(splits, index, corpus_checked, min_overlap=0.5):
    return leaks.drop_leaks(splits, index, min_overlap, corpus_checked, "sequence_classification", ["text"])


def test_drop_leaks_by_earlier_split_and_corpus():
    index = leaks.SentenceIndex(4)
    index.add(split_sentences("This sentence is in the corpus. Padding."))
    splits = {
        "train": [_rec("t1", "Seen in train, exactly."), _rec("t2", "Padding. This sentence is in the corpus.")],
        "validation": [_rec("v1", "seen in TRAIN exactly"),  # same words as t1
                       _rec("v2", "This sentence is in the corpus!"),  # a corpus sentence
                       _rec("v3", "Fresh validation text."), _rec("v4", "Fresh validation text.")],
        "test": [_rec("x1", "fresh validation text"), _rec("x2", "Brand new test text.")],
    }
    kept, dropped = _drop(splits, index, ["validation", "test"])
    assert {s: [r["id"] for r in recs] for s, recs in kept.items()} == {
        "train": ["t1", "t2"],  # train is not checked against the corpus here
        "validation": ["v3", "v4"],  # a repeat inside one split is not a leak
        "test": ["x2"]}
    assert dropped == {"train": {}, "validation": {"in_corpus": 1, "in_earlier_split": 1},
                       "test": {"in_earlier_split": 1}}
    kept, _ = _drop(splits, index, ["train", "validation", "test"])
    assert [r["id"] for r in kept["train"]] == ["t1"]


def test_drop_leaks_keys_by_task_type():
    # a pair is one key: the same first sentence with another second one is not a leak
    index = leaks.SentenceIndex(4)
    def rec(i, s1, s2):
        return {"id": i, "sentence1": s1, "sentence2": s2, "label": True}

    pair = {"train": [rec("a", "He sat on the bank.", "The bank closed.")],
            "validation": [rec("b", "He sat on the bank.", "A river bank."),
                           rec("c", "he sat on the BANK", "the bank closed")],
            "test": []}
    kept, dropped = leaks.drop_leaks(pair, index, 0.5, ["validation"], "pair_classification",
                                     ["sentence1", "sentence2"])
    assert [r["id"] for r in kept["validation"]] == ["b"] and dropped["validation"] == {"in_earlier_split": 1}


def test_dropped_example_does_not_count_as_seen():
    index = leaks.SentenceIndex(4)
    index.add(split_sentences("This sentence is in the corpus. Padding."))
    splits = {"train": [], "validation": [_rec("v", "This sentence is in the corpus.")],
              "test": [_rec("x", "This sentence is in the corpus?")]}
    kept, dropped = _drop(splits, index, ["validation"])
    assert kept["test"] == splits["test"] and dropped["test"] == {}
