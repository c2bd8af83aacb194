"""NSP pair creation (Google's create_pretraining_data algorithm) on tiny fake documents.

Token ids encode where they come from: id = doc * STRIDE + position in the document, so every
example can be traced back to its documents and positions.
"""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from bertops.errors import DataError
from bertops.text.pretraining_data import (
    RandomNextPool,
    TokenizedDocument,
    build_pretraining_data,
    create_instances_from_document,
    instances_to_table,
    iter_corpus,
    split_of,
    truncate_seq_pair,
)
from bertops.text.tokenizer import wordpiece_from_vocab_file

STRIDE = 100_000
CLS_ID, SEP_ID = 2, 3


def fake_doc(key: int, seg_lengths: list[int]) -> TokenizedDocument:
    bounds = [0, *np.cumsum(seg_lengths).tolist()]
    return TokenizedDocument(key, np.arange(bounds[-1], dtype=np.int32) + key * STRIDE, bounds)


def fake_corpus(n_docs: int, rng: random.Random, max_seg: int = 30) -> list[TokenizedDocument]:
    return [fake_doc(d, [rng.randint(1, max_seg) for _ in range(rng.randint(1, 40))])
            for d in range(1, n_docs + 1)]


def make_instances(docs, max_seq_length=64, short_seq_prob=0.1, seed=0, dupe_factor=1, pool_size=1000):
    rng = random.Random(seed)
    pool = RandomNextPool(pool_size, max_seq_length - 3, rng)
    for d in docs:
        pool.add(d)
    return [x for d in docs for _ in range(dupe_factor)
            for x in create_instances_from_document(d, pool, max_seq_length, short_seq_prob, rng)]


def pieces(inst):
    a_src, a_lo, a_hi, b_src, b_lo, b_hi, label = inst
    return a_src[a_lo:a_hi], b_src[b_lo:b_hi], label


def reference_truncate(len_a, len_b, max_num_tokens, rng):
    """google-research/bert truncate_seq_pair, one token at a time."""
    a, b = list(range(len_a)), list(range(len_b))
    while len(a) + len(b) > max_num_tokens:
        trunc = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()
    return a, b


@pytest.mark.parametrize("len_a,len_b,max_tokens", [
    (10, 5, 20), (50, 5, 20), (5, 50, 20), (30, 30, 20), (31, 30, 20), (30, 31, 20), (100, 1, 2),
    (1, 100, 2), (7, 3, 3)])
def test_truncation_lengths_match_reference(len_a, len_b, max_tokens):
    rng = random.Random(0)
    ref_a, ref_b = reference_truncate(len_a, len_b, max_tokens, rng)
    af, ab, bf, bb = truncate_seq_pair(len_a, len_b, max_tokens, rng)
    assert (len_a - af - ab, len_b - bf - bb) == (len(ref_a), len(ref_b))
    assert min(af, ab, bf, bb) >= 0


def test_truncation_drops_from_both_ends_evenly():
    rng = random.Random(0)
    cuts = [truncate_seq_pair(200, 10, 110, rng) for _ in range(2000)]  # drops 100 from A only
    assert all(c[0] + c[1] == 100 and c[2] == c[3] == 0 for c in cuts)
    assert 49.5 < np.mean([c[0] for c in cuts]) < 50.5  # Binomial(100, 1/2): sd of the mean 0.11


def test_examples_fit_and_nsp_labels_are_honest():
    docs = fake_corpus(60, random.Random(1))
    instances = make_instances(docs, max_seq_length=64, dupe_factor=3)
    assert len(instances) > 1000
    for inst in instances:
        a, b, label = pieces(inst)
        assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) + 3 <= 64
        # each segment is one contiguous stretch of one document
        for seg in (a, b):
            assert (np.diff(seg) == 1).all() and seg[0] // STRIDE == seg[-1] // STRIDE
        if label == 0:  # B really follows A in the same document
            assert b[0] // STRIDE == a[0] // STRIDE and b[0] > a[-1]
            if inst[2] - inst[1] + inst[5] - inst[4] < 61 and inst[4] == inst[2]:
                assert b[0] == a[-1] + 1
        else:
            assert b[0] // STRIDE != a[0] // STRIDE
    labels = np.array([inst[6] for inst in instances])
    # ~1/2 random, a little more: a one-segment chunk always takes a random next
    assert 0.45 < labels.mean() < 0.6


def test_random_next_rate_is_one_half():
    # The coin alone: every document is two 10-token segments (one chunk of two segments at
    # max_seq_length 64) and other documents are in the pool, so the first example of each pass
    # is a random next with probability exactly 1/2. (The overall rate above is higher: a chunk of
    # one segment always takes a random next.) N = 20,000 flips: sd = sqrt(0.25 / N) = 0.0035;
    # |rate - 0.5| < 0.016 is 4.5 sd (a false alarm about 7e-6, whatever the seed), while a coin of
    # 0.55 passes only 9.7 sd below its mean (about 1e-21).
    rng = random.Random(11)
    docs = [fake_doc(d, [10, 10]) for d in range(1, 201)]
    pool = RandomNextPool(1000, 61, rng)
    for d in docs:
        pool.add(d)
    labels = [create_instances_from_document(d, pool, 64, 0.0, rng)[0][6] for _ in range(100) for d in docs]
    assert len(labels) == 20_000
    assert abs(np.mean(labels) - 0.5) < 0.016, np.mean(labels)


def test_untruncated_real_next_is_exactly_consecutive():
    # short segments, never truncated: A ends where B begins
    docs = fake_corpus(60, random.Random(2), max_seg=5)
    instances = make_instances(docs, max_seq_length=128, short_seq_prob=0.0)
    real = [pieces(i) for i in instances if i[6] == 0]
    assert len(real) > 20
    for a, b, _ in real:
        assert b[0] == a[-1] + 1


def test_unused_segments_are_put_back():
    # one long document, no short sequences: every token of A's chunks is covered again later,
    # so with random next the text after a_end is not lost
    doc = fake_doc(1, [10] * 200)
    other = fake_doc(2, [10] * 50)
    instances = make_instances([doc, other], max_seq_length=64, short_seq_prob=0.0)
    covered = set()
    for inst in instances:
        a, b, label = pieces(inst)
        if a[0] // STRIDE == 1:
            covered.update(a.tolist())
            if label == 0:
                covered.update(b.tolist())
    # only truncation trims tokens (at most max 1/3 of a chunk here): most of the document is used
    assert len(covered) > 0.8 * 2000


def test_short_seq_prob_makes_shorter_examples():
    docs = fake_corpus(80, random.Random(3))
    lengths = {p: np.mean([len(pieces(i)[0]) + len(pieces(i)[1])
                           for i in make_instances(docs, 128, short_seq_prob=p)]) for p in (0.0, 1.0)}
    assert lengths[1.0] < 0.75 * lengths[0.0]


def test_deterministic_for_a_seed_and_seed_matters():
    docs = fake_corpus(30, random.Random(4))

    def flat(instances):
        return [(pieces(i)[0].tolist(), pieces(i)[1].tolist(), i[6]) for i in instances]

    assert flat(make_instances(docs, seed=7)) == flat(make_instances(docs, seed=7))
    assert flat(make_instances(docs, seed=7)) != flat(make_instances(docs, seed=8))


def test_pool_is_bounded_and_excludes_the_document():
    rng = random.Random(0)
    pool = RandomNextPool(capacity=50, window_tokens=20, rng=rng)
    for d in fake_corpus(100, random.Random(5)):
        pool.add(d)
    assert len(pool.windows) == 50 and pool.offered > 50
    assert len({w.key for w in pool.windows}) > 20  # a sample of many documents
    for _ in range(200):
        w = pool.sample(exclude_key=pool.windows[0].key)
        assert w.key != pool.windows[0].key and len(w.tokens) >= 1
    lone = RandomNextPool(10, 20, rng)
    lone.add(fake_doc(1, [5, 5, 5]))
    assert lone.sample(exclude_key=1) is None


def test_lone_document_still_gives_real_next_pairs():
    # no other document to draw from: chunks of 2+ segments fall back to the real next
    instances = make_instances([fake_doc(1, [10] * 40)], max_seq_length=64)
    assert instances and all(i[6] == 0 for i in instances)


def test_table_layout():
    docs = fake_corpus(10, random.Random(6))
    instances = make_instances(docs)
    table = instances_to_table(instances, CLS_ID, SEP_ID).to_pydict()
    for inst, ids, types, special, label in zip(instances, table["input_ids"], table["token_type_ids"],
                                                table["special_tokens_mask"], table["next_sentence_label"]):
        a, b, lab = pieces(inst)
        assert ids == [CLS_ID, *a.tolist(), SEP_ID, *b.tolist(), SEP_ID]
        assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert special == [int(t in (CLS_ID, SEP_ID)) for t in ids]
        assert label == lab


def test_split_of_is_stable_and_proportional():
    ids = [f"src/doc{i}" for i in range(4000)]
    splits = [split_of(i, 0.1) for i in ids]
    assert splits == [split_of(i, 0.1) for i in ids]
    assert 0.08 < splits.count("validation") / len(ids) < 0.12
    assert all(split_of(i, 0.0) == "train" for i in ids[:100])


def test_split_of_is_independent_of_the_task_split_hash():
    # bertops.data.build keeps in the corpus only ids whose plain sha256 falls outside its task
    # validation/test range; our held-out documents must still be drawn from those
    import hashlib

    def plain(i):
        return int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") / 2**64

    kept = [i for i in (f"bbc/{n}" for n in range(20000)) if plain(i) >= 0.2]
    share = sum(split_of(i, 0.05) == "validation" for i in kept) / len(kept)
    assert 0.04 < share < 0.06


def test_iter_corpus_interleaves_files_and_rejects_bad_records(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"id": f"a{i}", "text": "x"}) + "\n" for i in range(3)))
    b.write_text(json.dumps({"id": "b0", "text": "y"}) + "\n")
    assert [i for i, _ in iter_corpus([a, b])] == ["a0", "b0", "a1", "a2"]
    b.write_text(json.dumps({"id": "b0", "text": 5}) + "\n")
    with pytest.raises(DataError, match="b0"):
        list(iter_corpus([b]))


# -- the whole build, through a real tokenizer ------------------------------------------------

def number_tokenizer(tmp_path: Path, n: int):
    """Words are numbers "0".."n-1", each one token: id = 5 + number."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                               + [str(i) for i in range(n)]) + "\n")
    return wordpiece_from_vocab_file(vocab)


def number_documents(n_docs: int, seed: int = 0):
    """Document d: sentences of consecutive numbers, d * 1000 + position, paragraphs between."""
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        pos, paragraphs = d * 1000, []
        for _ in range(rng.randint(1, 4)):
            sentences = []
            for _ in range(rng.randint(1, 6)):
                k = rng.randint(1, 12)
                sentences.append(" ".join(str(pos + j) for j in range(k)) + " end.")
                pos += k
            paragraphs.append(" ".join(sentences))
        docs.append((f"numbers/{d}", "\n\n".join(paragraphs)))
    return docs


def build(tmp_path, name, docs, tok, **kw):
    kw = {"max_seq_length": 32, "dupe_factor": 2, "validation_fraction": 0.2, "seed": 1,
          "batch_chars": 2000, **kw}
    # "end" and "." are [UNK] (id 1) and "." is not in the vocab either: drop them when reading back
    return build_pretraining_data(iter(docs), tok, tmp_path / name, **kw)


def test_build_writes_a_deterministic_datasetdict(tmp_path):
    import datasets

    tok = number_tokenizer(tmp_path, 200 * 1000)
    docs = number_documents(200)
    stats = build(tmp_path, "a", docs, tok)
    build(tmp_path, "b", docs, tok)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert any(str(f).endswith(".arrow") for f in files_a)
    for f in files_a:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    build(tmp_path, "c", docs, tok, seed=2)
    assert (tmp_path / "a/train/data-00000-of-00001.arrow").read_bytes() != \
        (tmp_path / "c/train/data-00000-of-00001.arrow").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers

    dd = datasets.load_from_disk(str(tmp_path / "a"))
    assert set(dd) == {"train", "validation"}
    assert dd["train"].column_names == ["input_ids", "token_type_ids", "special_tokens_mask",
                                        "next_sentence_label"]
    valid_docs = {d for d, _ in docs if split_of(d, 0.2) == "validation"}
    valid_numbers = {int(d.split("/")[1]) for d in valid_docs}
    for split in ("train", "validation"):
        assert len(dd[split]) == stats["splits"][split]["examples"] > 0
        for ex in dd[split]:
            ids = ex["input_ids"]
            assert len(ids) <= 32 and ids[0] == 2 and ids[-1] == 3 and ids.count(3) == 2
            sep = ids.index(3)
            assert ex["token_type_ids"] == [0] * (sep + 1) + [1] * (len(ids) - sep - 1)
            docs_a = {(i - 5) // 1000 for i in ids[1:sep] if i >= 5}
            docs_b = {(i - 5) // 1000 for i in ids[sep + 1:-1] if i >= 5}
            if docs_a and docs_b:
                assert len(docs_a) == 1 and len(docs_b) == 1
                assert (docs_a == docs_b) == (ex["next_sentence_label"] == 0)
                # no text of one split is paired with the other's
                assert (docs_a.pop() in valid_numbers) == (split == "validation")
    total = stats["total"]
    assert total["next_sentence_label_0"] + total["next_sentence_label_1"] == total["examples"]
    assert total["tokens"] == sum(len(x) for s in dd for x in dd[s]["input_ids"])


def test_build_corpus_tokens_are_all_tokens(tmp_path):
    tok = number_tokenizer(tmp_path, 50 * 1000)
    docs = number_documents(50, seed=3)
    stats = build(tmp_path, "a", docs, tok, validation_fraction=0.0)
    expected = sum(len(tok.encode(text, add_special_tokens=False).ids) for _, text in docs)
    assert stats["total"]["corpus_tokens"] == expected
    assert stats["splits"]["validation"]["examples"] == 0
