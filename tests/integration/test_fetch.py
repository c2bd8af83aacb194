"""The real `bertops data fetch`, run fresh into a temporary directory: layout, schemas,
plausible counts, held-out data kept out of the corpus, MANIFEST, determinism (against the
session's `real_data_dir`, itself either a second fetch or the repo's up-to-date data/)."""

import hashlib
import json
import re
import time
from collections import Counter

import pytest

from bertops.data import build as B
from bertops.data import fetch
from bertops.io import read_jsonl

TASKS = ("sentiment", "topic", "wic", "code-entities", "define-qa")
ENTITY_TYPES = {"class", "method", "attribute", "function", "module", "exception", "setting"}


def load(data_dir, task, split):
    return list(read_jsonl(data_dir / "tasks" / task / f"{split}.jsonl"))


@pytest.fixture(scope="module")
def fetched(repo_params, tmp_path_factory):
    from tests.conftest import fetch_data

    return fetch_data(repo_params, tmp_path_factory.mktemp("fetch") / "data")


@pytest.fixture(scope="module")
def tasks(fetched):
    return {t: {s: load(fetched, t, s) for s in B.SPLITS} for t in TASKS}


@pytest.fixture(scope="module")
def corpus(fetched, repo_params):
    return {s: list(read_jsonl(fetched / "corpus" / f"{s}.jsonl")) for s in repo_params.data.corpus_sources}


def test_counts_are_plausible(tasks, corpus, repo_params):
    minimum = {"sentiment": 10000, "topic": 2000, "wic": 5000, "code-entities": 5000, "define-qa": 5000}
    for task, splits in tasks.items():
        n = sum(len(v) for v in splits.values())
        assert n >= minimum[task], task
        cap = repo_params.data.max_examples.get(task)
        assert cap is None or n <= cap, task
        for split in ("validation", "test"):  # ~10% each, not empty
            assert 0.05 * n < len(splits[split]) < 0.16 * n, (task, split)
    docs = {s: len(d) for s, d in corpus.items()}
    assert docs["austen"] > 250 and docs["django-docs"] > 400 and docs["bbc"] > 1500
    assert docs["speeches"] > 250 and docs["rotten-tomatoes-plots"] > 900
    assert sum(len(d["text"]) for ds in corpus.values() for d in ds) > 10_000_000


def test_corpus_records(corpus, repo_params):
    from bertops.validation.rules import normalize_text

    all_texts = [normalize_text(d["text"]) for docs in corpus.values() for d in docs]
    assert len(set(all_texts)) == len(all_texts)  # validate's duplicate_document, corpus-wide
    for source, docs in corpus.items():
        assert min(len(d["text"]) for d in docs) >= repo_params.validate_.corpus_min_chars, source
        ids = [d["id"] for d in docs]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert len({d["text"] for d in docs}) == len(docs)
        for d in docs:
            assert set(d) == {"id", "source", "text"} and d["source"] == source
            assert "\n\n\n" not in d["text"] and d["text"] == d["text"].strip()
        # every document has two sentences for next-sentence prediction (checked on a sample)
        for d in docs[::25]:
            assert B.count_sentences(d["text"]) >= repo_params.data.min_sentences, d["id"]


def test_django_corpus_is_prose(corpus):
    docs = corpus["django-docs"]
    # only the few pages that teach rST quote role markup literally
    with_roles = [d["id"] for d in docs if re.search(r":(class|meth|setting|doc|ref):`", d["text"])]
    assert len(with_roles) <= 5, with_roles
    for d in docs:
        assert not re.search(r"^(\.\. |[=\-~^]{4,}$|>>> )", d["text"], re.M), d["id"]


def test_task_schemas(tasks, repo_params):
    labels = {t: set(repo_params.tasks[t].labels) for t in ("sentiment", "topic")}
    for split in B.SPLITS:
        for r in tasks["sentiment"][split] + tasks["topic"][split]:
            assert isinstance(r["id"], str) and isinstance(r["text"], str) and r["text"]
        assert {r["label"] for r in tasks["sentiment"][split]} == labels["sentiment"]
        assert {r["label"] for r in tasks["topic"][split]} == labels["topic"]
        for r in tasks["wic"][split]:
            assert set(r) == {"id", "sentence1", "sentence2", "word", "label"}
            assert isinstance(r["label"], bool)
            assert r["word"].lower() in r["sentence1"].lower() and r["word"].lower() in r["sentence2"].lower()
        for r in tasks["code-entities"][split]:
            assert set(r) == {"id", "tokens", "ner_tags"} and len(r["tokens"]) == len(r["ner_tags"])
            prev = "O"
            for tag in r["ner_tags"]:
                assert tag == "O" or tag[2:] in ENTITY_TYPES
                if tag.startswith("I-"):
                    assert prev[2:] == tag[2:]
                prev = tag
        for r in tasks["define-qa"][split]:
            assert set(r) == {"id", "title", "context", "question", "answers"}
            (text,), (start,) = r["answers"]["text"], r["answers"]["answer_start"]
            assert r["context"][start:start + len(text)] == text and text
            assert r["question"].startswith("Which word means: ")
    wic = Counter(r["label"] for s in B.SPLITS for r in tasks["wic"][s])
    assert abs(wic[True] - wic[False]) <= 1
    tags = Counter(t for s in B.SPLITS for r in tasks["code-entities"][s] for t in r["ner_tags"])
    assert {t[2:] for t in tags if t.startswith("B-")} == ENTITY_TYPES


def test_splits_are_disjoint(tasks):
    for task, splits in tasks.items():
        ids = {s: {r["id"] for r in splits[s]} for s in B.SPLITS}
        assert sum(len(v) for v in ids.values()) == len(set().union(*ids.values())), task
    for task in ("sentiment", "topic"):
        texts = {s: {r["text"] for r in tasks[task][s]} for s in B.SPLITS}
        assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
    words = {s: {r["word"] for r in tasks["wic"][s]} for s in B.SPLITS}
    assert not (words["train"] & words["test"])


def test_held_out_documents_not_in_corpus(tasks, corpus):
    corpus_ids = {d["id"] for docs in corpus.values() for d in docs}
    corpus_texts = {d["text"] for docs in corpus.values() for d in docs}
    for split in ("validation", "test"):
        for r in tasks["topic"][split]:
            assert r["id"] not in corpus_ids and r["text"] not in corpus_texts
        held_docs = {r["id"].split("#")[0] for r in tasks["code-entities"][split]}
        assert held_docs and not (held_docs & corpus_ids)
    train_docs = {r["id"].split("#")[0] for r in tasks["code-entities"]["train"]}
    assert train_docs & corpus_ids  # the train pages are pretraining text


def test_held_out_examples_pass_validate_leak_rules(tasks, corpus, repo_params):
    """validate's text_in_one_split and not_in_pretraining_corpus, as validate calls them (with the
    repo's task params, on the fetched files): the near-copies of bbc articles and the sentences
    Django pages repeat are gone."""
    from bertops.data.leaks import SentenceIndex, is_contaminated
    from bertops.text.sentences import split_sentences
    from bertops.validation import rules

    vp = repo_params.validate_
    index = SentenceIndex(vp.contamination_min_words)
    for source, docs in corpus.items():
        for line, d in enumerate(docs, 1):
            index.add(split_sentences(d["text"]), source, line)
    for task, splits in tasks.items():
        tp = repo_params.tasks[task]
        seen: set = set()
        for split in B.SPLITS:
            keys = {rules.example_key(tp.type, r, tp.text_fields, tp.tokens_field) for r in splits[split]} - {None}
            assert not keys & seen, (task, split, sorted(keys & seen)[:3])
            seen |= keys
            if split not in vp.contamination_splits:
                continue
            for r in splits[split]:
                found, checked, first = index.overlap(rules.example_texts(tp.type, r, tp.text_fields,
                                                                          tp.tokens_field))
                assert not is_contaminated(found, checked, vp.contamination_min_overlap), (task, split, r["id"], first)


def test_manifest_matches_files(fetched):
    manifest = json.loads((fetched / "MANIFEST.json").read_text())
    files = sorted(p.relative_to(fetched).as_posix() for p in fetched.rglob("*")
                   if p.is_file() and p.name != "MANIFEST.json")
    assert sorted(manifest["files"]) == files
    for rel, meta in manifest["files"].items():
        data = (fetched / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"]
        if rel.endswith(".jsonl"):
            assert meta["records"] == data.count(b"\n")
    assert {s["id"] for s in manifest["sources"]} == set(fetch.SOURCES)
    for s in manifest["sources"]:
        assert s["registry"] in ("pypi", "debian") and s["package"] and s["version"] and s["license"]
    assert "Princeton University" in (fetched / "licenses/wordnet.txt").read_text()
    # what was left out is on record: Django pages repeat sentences, bbc has near-copies
    dropped = manifest["dropped"]
    assert dropped["tasks"]["code-entities"]["validation"]["in_earlier_split"] > 0
    assert dropped["tasks"]["topic"]["test"]["in_corpus"] > 0 and dropped["sources"]["bbc"]["duplicate"] > 98
    assert dropped["corpus"]["django-docs"]["short"] > 0


def test_second_fetch_is_skipped(fetched, repo_params):
    params = repo_params.model_copy(update={"data": repo_params.data.model_copy(update={"dir": str(fetched)})})
    before = (fetched / "MANIFEST.json").stat().st_mtime_ns
    start = time.perf_counter()
    result = fetch.main(params)
    assert result["skipped"] is True and time.perf_counter() - start < 5
    assert (fetched / "MANIFEST.json").stat().st_mtime_ns == before


def test_fetch_is_deterministic(fetched, real_data_dir):
    assert fetched != real_data_dir
    for path in sorted(fetched.rglob("*")):
        if path.is_file():
            rel = path.relative_to(fetched)
            assert (real_data_dir / rel).read_bytes() == path.read_bytes(), (
                f"{rel} differs between two fetches (if data/ predates a code change: bump "
                "bertops.data.fetch.BUILD_VERSION)")
