"""bertops.data.leaks: the fetch's copy of validate's leak rules, checked against the originals
(bertops.validation.rules / contamination) on tiny in-memory records."""

import pytest

from bertops.data import leaks
from bertops.text.sentences import split_sentences
from bertops.validation import rules
from bertops.validation.contamination import SentenceIndex as ValidationIndex

TEXTS = ["Hello,  World!", "It's the Model.save() method —  see django.db.models.", "ÉCOLE  école\n\nÜber",
         "tokens , joined . by spaces", "   ", "C'est l'été; 3.5% of __init__"]

RECORDS = [  # (task type as params declare it, text fields, a record of that layout)
    ("sequence_classification", ["text"], {"id": "a", "text": "A Short text. Another one!", "label": "x"}),
    ("pair_classification", ["sentence1", "sentence2"],
     {"id": "b", "sentence1": "the bank of the river", "sentence2": "a Bank loan", "word": "bank", "label": True}),
    ("token_classification", [], {"id": "c", "tokens": ["Call", "Model.save", "now", "."],
                                  "ner_tags": ["O", "B-method", "O", "O"]}),
    ("extractive_qa", [], {"id": "d", "title": "t", "question": "Which word means: x?", "context": "A bank. B.",
                           "answers": {"text": ["bank"], "answer_start": [2]}}),
]


@pytest.mark.parametrize("text", TEXTS)
def test_normalize_text_is_validations(text):
    assert leaks.normalize_text(text) == rules.normalize_text(text)


@pytest.mark.parametrize("task_type,fields,rec", RECORDS)
def test_example_key_and_texts_are_validations(task_type, fields, rec):
    assert leaks.example_key(rec) == rules.example_key(task_type, rec, fields, "tokens")
    assert leaks.example_texts(rec) == rules.example_texts(task_type, rec, fields, "tokens")


CORPUS = ["The quick brown fox jumps over the lazy dog today. Short one.\n\n"
          "Every good boy deserves fudge and a little more cake. Another sentence that is long enough to count here."]
QUERIES = [
    ["THE quick brown fox   jumps over the lazy dog, today!"],  # same sentence, other case/punctuation
    ["The quick brown fox jumps over the lazy dog today. A brand new sentence that nobody wrote before."],
    ["A brand new sentence that nobody wrote before. And yet another one nobody has seen, surely."],
    ["Short one."],  # under min_words: never a leak
    ["Every good boy deserves fudge and a little more cake.", "Two fields: the second is new and long enough."],
]


@pytest.mark.parametrize("min_overlap", [0.5, 1.0, 0.3])
def test_contamination_agrees_with_validation(min_overlap):
    ours, theirs = leaks.SentenceIndex(8), ValidationIndex(8)
    for i, doc in enumerate(CORPUS):
        ours.add_document(doc)
        theirs.add(split_sentences(doc), "corpus/x", i + 1)
    assert len(ours) == len(theirs) == 3
    verdicts = []
    for texts in QUERIES:
        found, checked, _ = theirs.overlap(texts)
        expected = bool(found) and found >= min_overlap * checked
        assert ours.contaminated(texts, min_overlap) == expected, texts
        verdicts.append(expected)
    assert verdicts[0] and not verdicts[2] and not verdicts[3]  # the cases are not all alike


def _rec(i, text):
    return {"id": i, "text": text, "label": "x"}


def test_drop_leaks_by_earlier_split_and_corpus():
    index = leaks.SentenceIndex(4)
    index.add_document("This sentence is in the corpus. Padding.")
    splits = {
        "train": [_rec("t1", "Seen in train, exactly."), _rec("t2", "Padding. This sentence is in the corpus.")],
        "validation": [_rec("v1", "seen in TRAIN exactly"),  # same words as t1
                       _rec("v2", "This sentence is in the corpus!"),  # a corpus sentence
                       _rec("v3", "Fresh validation text."), _rec("v4", "Fresh validation text.")],
        "test": [_rec("x1", "fresh validation text"), _rec("x2", "Brand new test text.")],
    }
    kept, dropped = leaks.drop_leaks(splits, index, 0.5, ["validation", "test"])
    assert {s: [r["id"] for r in recs] for s, recs in kept.items()} == {
        "train": ["t1", "t2"],  # train is not checked against the corpus here
        "validation": ["v3", "v4"],  # a repeat inside one split is not a leak
        "test": ["x2"]}
    assert dropped == {"train": {}, "validation": {"in_corpus": 1, "in_earlier_split": 1},
                       "test": {"in_earlier_split": 1}}
    kept, _ = leaks.drop_leaks(splits, index, 0.5, ["train", "validation", "test"])
    assert [r["id"] for r in kept["train"]] == ["t1"]


def test_dropped_example_does_not_count_as_seen():
    index = leaks.SentenceIndex(4)
    index.add_document("This sentence is in the corpus. Padding.")
    splits = {"train": [], "validation": [_rec("v", "This sentence is in the corpus.")],
              "test": [_rec("x", "This sentence is in the corpus?")]}
    kept, dropped = leaks.drop_leaks(splits, index, 0.5, ["validation"])
    assert kept["test"] == splits["test"] and dropped["test"] == {}
