"""Turn parsed sources into the data/ layout: corpus documents, task splits, MANIFEST.

Everything here is pure and deterministic: splits come from a stable hash of a key (never
Python's salted `hash`), sampling from `random.Random` seeded with a string, and every list
is sorted before it is written. Validation/test examples and the documents they came from are
kept out of the pretraining corpus; bertops.data.leaks then drops held-out examples that other
documents still put there (near-copies, sentences a page repeats).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections import Counter
from pathlib import Path

from bertops.data.leaks import SPLITS, normalize_text
from bertops.data.sources.bbc import Article
from bertops.data.sources.django_docs import Paragraph
from bertops.data.sources.rotten_tomatoes import Row
from bertops.data.sources.wordnet import Usage, find_word

# WordNet lexicographer file names, by lex_filenum (WordNet 3.0 lexnames(5WN)).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key` on every machine and Python version."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def split_of(key: str, validation_fraction: float, test_fraction: float) -> str:
    x = stable_fraction(key)
    if x < test_fraction:
        return "test"
    if x < test_fraction + validation_fraction:
        return "validation"
    return "train"


def short_hash(text: str, n: int = 12) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:n]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Sentence (start, end) offsets in one paragraph, by blingfire (as bertops.text.sentences).

    blingfire's own offsets function loops over bytes in Python (~30x slower), so the
    sentences are located in the text instead; it is the fallback when whitespace differs.
    """
    import blingfire

    spans, pos = [], 0
    for sent in blingfire.text_to_sentences(text).split("\n"):
        if not sent.strip():
            continue
        start = text.find(sent, pos)
        if start < 0:
            offsets = blingfire.text_to_sentences_and_offsets(text)[1]
            return [(a, b) for a, b in offsets if text[a:b].strip()]
        spans.append((start, start + len(sent)))
        pos = start + len(sent)
    return spans


def count_sentences(text: str, at_least: int | None = None) -> int:
    """Sentences in a document (paragraphs split on their own); stops early at `at_least`."""
    import blingfire

    n = 0
    for para in text.split("\n\n"):
        n += sum(1 for s in blingfire.text_to_sentences(para).split("\n") if s.strip())
        if at_least is not None and n >= at_least:
            break
    return n


def normalize(text: str) -> str:
    """Collapse whitespace inside paragraphs; paragraphs separated by exactly "\\n\\n"."""
    paras = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paras if p)


def corpus_documents(source: str, docs: list[tuple[str, str]], min_sentences: int, min_chars: int = 0,
                     seen: set[str] | None = None, dropped: Counter | None = None) -> list[dict]:
    """{"id","source","text"} records, sorted by id, dropping documents shorter than `min_chars`
    (validate's corpus_min_chars: stubs such as a contents page), with too few sentences
    (next-sentence prediction needs at least two), or whose text is a duplicate once case,
    punctuation and spacing are ignored (validate's duplicate_document rule). `seen` (normalized
    texts) carries across sources; `dropped` counts by reason."""
    out, seen = [], set() if seen is None else seen
    dropped = Counter() if dropped is None else dropped
    for doc_id, text in sorted(docs):
        text = normalize(text)
        key = normalize_text(text)
        if len(text) < min_chars:
            dropped["short"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        elif count_sentences(text, at_least=min_sentences) < min_sentences:
            dropped["few_sentences"] += 1
        else:
            seen.add(key)
            out.append({"id": doc_id, "source": source, "text": text})
    return out


def _by_split(examples: list[tuple[str, dict]]) -> dict[str, list[dict]]:
    """Group (split, record) pairs; each split sorted by id."""
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split, rec in examples:
        out[split].append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: r["id"])
    return out


def _cap(items: list, cap: int | None, rng: random.Random) -> list:
    return items if cap is None or len(items) <= cap else rng.sample(items, cap)


# ---------------------------------------------------------------- sentiment, topic


def sentiment_task(rows: list[Row], fractions: tuple[float, float], cap: int | None,
                   rng: random.Random) -> dict[str, list[dict]]:
    """Critic snippets, fresh vs rotten. Texts are de-duplicated; a text seen with both
    verdicts is dropped (its label is not defined)."""
    labels: dict[str, set[str]] = {}
    for r in rows:
        if r.category in ("fresh", "rotten"):
            labels.setdefault(" ".join(r.text.split()), set()).add(r.category)
    items = sorted((t, ls.pop()) for t, ls in labels.items() if len(ls) == 1 and t)
    examples = []
    for text, label in _cap(items, cap, rng):
        ex_id = f"rt-{short_hash(text)}"
        examples.append((split_of(ex_id, *fractions), {"id": ex_id, "text": text, "label": label}))
    return _by_split(examples)


def dedupe_articles(articles: list[Article]) -> list[Article]:
    """Drop duplicate texts, keeping the lowest id: the package has 98 exact copies and a few
    more differing only in spacing or a full stop, so texts compare normalized (case,
    punctuation and spacing ignored, as validate's duplicate rules do)."""
    seen, out = set(), []
    for a in sorted(articles, key=lambda a: a.id):
        key = normalize_text(a.text)
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


def topic_task(articles: list[Article], fractions: tuple[float, float]) -> dict[str, list[dict]]:
    """BBC article (headline + body) -> topic; split by article (the corpus uses the same split)."""
    return _by_split([(split_of(a.id, *fractions), {"id": a.id, "text": a.text, "label": a.label})
                      for a in articles])


# ---------------------------------------------------------------- code-entities

MIN_CONTEXT_WORDS = 3
TOKEN = re.compile(r"\w+(?:[.'’-]\w+)*|[^\w\s]")  # words keep inner dots: "django.db.models"


def bio_tag(text: str, entities: list[tuple[int, int, str]]) -> tuple[list[str], list[str]]:
    """Tokens of `text` (words and single punctuation marks) with BIO tags of the entity spans.

    Text outside and inside each span is tokenized separately, so spans always fall on
    token boundaries."""
    tokens, tags, pos = [], [], 0
    for start, end, etype in sorted(entities):
        if start < pos:
            continue  # overlapping spans do not occur in rendered roles; keep the first
        outside = TOKEN.findall(text[pos:start])
        tokens += outside
        tags += ["O"] * len(outside)
        inside = TOKEN.findall(text[start:end])
        tokens += inside
        tags += [("B-" if i == 0 else "I-") + etype for i in range(len(inside))]
        pos = end
    rest = TOKEN.findall(text[pos:])
    return tokens + rest, tags + ["O"] * len(rest)


def entity_sentences(doc_id: str, paragraphs: list[Paragraph]) -> list[dict]:
    """One example per sentence that holds at least one entity span."""
    out = []
    for p_i, para in enumerate(paragraphs):
        for s_i, (a, b) in enumerate(sentence_spans(para.text)):
            ents = [(max(s, a) - a, min(e, b) - a, t) for s, e, t in para.entities if s < b and e > a]
            if not ents:
                continue
            tokens, tags = bio_tag(para.text[a:b], ents)
            # a sentence, not a bare list item: at least MIN_CONTEXT_WORDS words outside entities
            context_words = sum(1 for tok, tag in zip(tokens, tags) if tag == "O" and tok[0].isalnum())
            if any(t != "O" for t in tags) and context_words >= MIN_CONTEXT_WORDS:
                out.append({"id": f"{doc_id}#{p_i}.{s_i}", "tokens": tokens, "ner_tags": tags})
    return out


def code_entities_task(docs: list[tuple[str, list[Paragraph]]], fractions: tuple[float, float],
                       cap: int | None, rng: random.Random) -> dict[str, list[dict]]:
    """Django docs sentences with role markup; split by document (as the corpus is)."""
    examples = [(split_of(doc_id, *fractions), ex)
                for doc_id, paras in docs for ex in entity_sentences(doc_id, paras)]
    return _by_split(_cap(examples, cap, rng))


# ---------------------------------------------------------------- WordNet tasks

_POS_GROUP = {"s": "a"}  # adjective satellites are adjectives


def wic_task(usages: list[Usage], fractions: tuple[float, float], cap: int | None,
             rng: random.Random) -> dict[str, list[dict]]:
    """Word-in-Context pairs (as SuperGLUE WiC was built from WordNet examples): two example
    sentences containing the same lemma (same part of speech); label = same synset.

    Positives are rarer (about 1 in 8): both classes are sampled to the same size. Split by
    the word, so no word (and none of its sentences) is shared between splits."""
    groups: dict[tuple[str, str], list[Usage]] = {}
    for u in usages:
        groups.setdefault((u.word, _POS_GROUP.get(u.synset.pos, u.synset.pos)), []).append(u)
    pos, neg = [], []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda u: (u.synset.id, u.sentence))
        for a, b in itertools.combinations(members, 2):
            if a.sentence != b.sentence:
                (pos if a.synset.id == b.synset.id else neg).append((a, b))
    n = min(len(pos), len(neg), (cap // 2) if cap else len(pos))
    chosen = [(p, True) for p in rng.sample(pos, n)] + [(p, False) for p in rng.sample(neg, n)]
    examples = []
    for (a, b), label in chosen:
        if rng.random() < 0.5:
            a, b = b, a
        ex_id = f"wic-{short_hash(a.word + chr(9) + a.sentence + chr(9) + b.sentence)}"
        examples.append((split_of(f"wic-word:{a.word}", *fractions),
                         {"id": ex_id, "sentence1": a.sentence, "sentence2": b.sentence,
                          "word": a.word, "label": label}))
    return _by_split(examples)


def _full_stop(sentence: str) -> str:
    return sentence if sentence[-1] in ".!?" else sentence + "."


def define_qa_task(usages: list[Usage], fractions: tuple[float, float], cap: int | None,
                   distractors: tuple[int, int], rng: random.Random) -> dict[str, list[dict]]:
    """Extractive QA in SQuAD format: "Which word means: <gloss>?" answered by the defined word
    in its example sentence, placed among 1-3 example sentences of other synsets that do not
    contain the word. Split by synset, distractors drawn from the same split."""
    split_usages: dict[str, list[Usage]] = {s: [] for s in SPLITS}
    for u in usages:
        split_usages[split_of(f"synset:{u.synset.id}", *fractions)].append(u)
    examples = []
    for split in SPLITS:
        pool = sorted({u.sentence for u in split_usages[split]})
        n_split = round(cap * len(split_usages[split]) / len(usages)) if cap else None
        for u in _cap(split_usages[split], n_split, rng):
            k = rng.randint(*distractors)
            others: list[str] = []
            for _ in range(20 * k):  # bounded: a tiny pool may hold too few usable sentences
                if len(others) == k:
                    break
                s = rng.choice(pool)
                if s not in u.synset.examples and s not in others and find_word(u.word, s) < 0:
                    others.append(s)
            at = rng.randint(0, len(others))
            # WordNet examples are fragments without a final stop; add one so they read apart
            sentences = [_full_stop(s) for s in others[:at] + [u.sentence] + others[at:]]
            start = sum(len(s) + 1 for s in sentences[:at]) + u.start
            context = " ".join(sentences)
            answer = context[start:start + len(u.word)]
            examples.append((split, {
                "id": f"dqa-{u.synset.id}-{short_hash(u.sentence, 8)}",
                "title": LEXNAMES[u.synset.lexname_num],
                "question": f"Which word means: {u.synset.definition}?",
                "context": context,
                "answers": {"text": [answer], "answer_start": [start]},
            }))
    return _by_split(examples)


# ---------------------------------------------------------------- manifest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
