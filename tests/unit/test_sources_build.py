"""Task and corpus assembly (bertops.data.build) on tiny in-memory sources."""

import random
from collections import Counter

from bertops.data import build as B
from bertops.data.sources.bbc import Article
from bertops.data.sources.django_docs import Paragraph, render_inline
from bertops.data.sources.rotten_tomatoes import Row
from bertops.data.sources.wordnet import Synset, usages

FRACTIONS = (0.1, 0.1)


def test_split_of_is_stable_and_proportional():
    keys = [f"doc-{i}" for i in range(20000)]
    splits = [B.split_of(k, *FRACTIONS) for k in keys]
    assert splits == [B.split_of(k, *FRACTIONS) for k in keys]
    share = Counter(splits)
    assert abs(share["test"] / 20000 - 0.1) < 0.01 and abs(share["validation"] / 20000 - 0.1) < 0.01
    assert B.split_of("doc-1", 0.0, 0.0) == "train"


def test_corpus_documents_filters_and_normalizes():
    docs = [("b", "One  sentence.\n\n\n Two sentences here. Yes."), ("a", "Only one."),
            ("c", "One  sentence.\n\nTwo sentences here. Yes.")]
    out = B.corpus_documents("src", docs, min_sentences=2)
    assert out == [{"id": "b", "source": "src", "text": "One sentence.\n\nTwo sentences here. Yes."}]


def test_corpus_documents_drops_short_and_near_duplicates_across_sources():
    seen, why = set(), Counter()
    first = B.corpus_documents("s1", [("a", "Contents. Index."), ("b", "A real page. It has text enough.")],
                               min_sentences=2, min_chars=20, seen=seen, dropped=why)
    second = B.corpus_documents("s2", [("c", "a REAL page -- it has text, enough"),
                                       ("d", "Another page entirely. With two sentences.")],
                                min_sentences=2, min_chars=20, seen=seen, dropped=why)
    assert [d["id"] for d in first] == ["b"] and [d["id"] for d in second] == ["d"]
    assert why == {"short": 1, "duplicate": 1}


def test_sentence_spans_match_text():
    text = "First one, e.g. here.  Second  one! Third?"
    spans = B.sentence_spans(text)
    assert [text[a:b] for a, b in spans] == ["First one, e.g. here.", "Second  one!", "Third?"]


def test_sentiment_dedupes_and_drops_conflicts():
    rows = [Row("fresh", "Great  fun.", "m"), Row("fresh", "Great fun.", "m2"),
            Row("rotten", "Dull.", "m"), Row("fresh", "Dull.", "m3"), Row("plot", "A plot.", "m"),
            Row("rotten", "Bad.", "m")]
    splits = B.sentiment_task(rows, FRACTIONS, None, random.Random(0))
    recs = [r for s in B.SPLITS for r in splits[s]]
    assert sorted((r["text"], r["label"]) for r in recs) == [("Bad.", "rotten"), ("Great fun.", "fresh")]
    assert all(r["id"].startswith("rt-") for r in recs)


def test_topic_dedupes_articles_and_splits_by_id():
    arts = [Article("bbc/tech/002", "tech", "Same text."), Article("bbc/tech/001", "tech", "Same text."),
            Article("bbc/sports/001", "sport", "Other.")]
    kept = B.dedupe_articles(arts)
    assert [a.id for a in kept] == ["bbc/sports/001", "bbc/tech/001"]
    # the package's near-copies differ in spacing, case or a full stop
    near = [Article("bbc/sports/182", "sport", "Same  text\n\nMore"),
            Article("bbc/sports/181", "sport", "same text. More.")]
    assert [a.id for a in B.dedupe_articles(near)] == ["bbc/sports/181"]
    splits = B.topic_task(kept, FRACTIONS)
    for split, recs in splits.items():
        assert all(B.split_of(r["id"], *FRACTIONS) == split for r in recs)


def test_bio_tag_aligns_spans_to_tokens():
    para = render_inline("Call :meth:`Model.save` on a :class:`~django.db.models.Model` now.")
    tokens, tags = B.bio_tag(para.text, para.entities)
    assert tokens == ["Call", "Model.save", "on", "a", "Model", "now", "."]
    assert tags == ["O", "B-method", "O", "O", "B-class", "O", "O"]
    tokens, tags = B.bio_tag("Use the foo bar thing.", [(8, 15, "function")])
    assert tags == ["O", "O", "B-function", "I-function", "O", "O"]


def test_entity_sentences_need_entity_and_context():
    paras = [render_inline("Set :setting:`DEBUG` to off in production. No entity here."),
             render_inline(":class:`Model`"), Paragraph("Plain text. Still plain.")]
    out = B.entity_sentences("django-docs/x", paras)
    assert [(e["id"], e["tokens"]) for e in out] == [
        ("django-docs/x#0.0", ["Set", "DEBUG", "to", "off", "in", "production", "."])]
    assert out[0]["ner_tags"][1] == "B-setting"


def _synset(i, words, examples, pos="n"):
    return Synset(f"noun.{i:08d}", 5, pos, tuple(words), f"definition {i}", tuple(examples))


SYNSETS = [
    _synset(1, ["bank"], ["the bank of the river", "we walked along the bank", "a muddy bank"]),
    _synset(2, ["bank"], ["the bank closed early", "a bank loan", "she robbed a bank"]),
    _synset(3, ["dog"], ["the dog barked", "walk the dog", "a dog show"]),
    _synset(4, ["dog", "frump"], ["you lucky dog", "an old frump"]),
    _synset(5, ["river"], ["the river froze", "a river cruise"]),
]


def test_wic_balanced_and_labelled_by_synset():
    us = usages(SYNSETS)
    splits = B.wic_task(us, (0.0, 0.0), cap=None, rng=random.Random(0))
    recs = splits["train"]
    labels = Counter(r["label"] for r in recs)
    assert labels[True] == labels[False] > 0
    synset_of = {(u.word, u.sentence): u.synset.id for u in us}
    for r in recs:
        same = synset_of[(r["word"], r["sentence1"])] == synset_of[(r["word"], r["sentence2"])]
        assert r["label"] is same and r["sentence1"] != r["sentence2"]
    capped = B.wic_task(us, (0.0, 0.0), cap=4, rng=random.Random(0))["train"]
    assert Counter(r["label"] for r in capped) == {True: 2, False: 2}


def test_wic_splits_by_word():
    splits = B.wic_task(usages(SYNSETS), (0.3, 0.3), cap=None, rng=random.Random(0))
    words = {s: {r["word"] for r in recs} for s, recs in splits.items()}
    assert not (words["train"] & words["validation"]) and not (words["train"] & words["test"])


def test_define_qa_answers_are_context_slices():
    splits = B.define_qa_task(usages(SYNSETS), (0.0, 0.0), cap=None, distractors=(1, 3), rng=random.Random(1))
    recs = splits["train"]
    assert len(recs) == len(usages(SYNSETS))
    for r in recs:
        start, text = r["answers"]["answer_start"][0], r["answers"]["text"][0]
        assert r["context"][start:start + len(text)] == text
        assert r["question"].startswith("Which word means: definition ")
        assert r["context"].lower().count(text.lower()) == 1  # distractors never hold the word
        assert 2 <= r["context"].count(".") <= 4  # the example plus 1-3 distractors, full stops added
    assert len({r["id"] for r in recs}) == len(recs)


def test_define_qa_terminates_without_usable_distractors():
    only = [_synset(1, ["bank"], ["the bank of the river", "a muddy bank"])]
    recs = B.define_qa_task(usages(only), (0.0, 0.0), cap=None, distractors=(1, 3), rng=random.Random(0))["train"]
    assert sorted(r["context"] for r in recs) == ["a muddy bank.", "the bank of the river."]
