"""Next-sentence-prediction pretraining examples, as Google's create_pretraining_data.py makes them.

For each document (a list of sentence segments) and each of `dupe_factor` passes: gather segments
until `target_seq_length` tokens (max_seq_length - 3, or a random shorter length with probability
`short_seq_prob`), cut the chunk at a random `a_end`; B is the rest of the chunk (the real next,
next_sentence_label 0) or, half the time, text from another document (label 1), and then the
unused segments are put back; the longer segment is truncated from a random end until the pair fits.
Examples are "[CLS] A [SEP] B [SEP]", unmasked (masking is done per batch at training time).

Unlike the reference, which holds every document in RAM, this streams: documents are read,
sentence-split, tokenized (`encode_batch_fast` over all sentences of a batch) and written to Arrow
batch by batch, so memory is bounded by `batch_chars` and the random-next pool, not the corpus.
The per-segment bookkeeping is plain Python over segment lengths; token ids stay in numpy arrays and
are only sliced and concatenated, so no Python work is done per token.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bertops.errors import DataError
from bertops.text.sentences import split_sentences
from bertops.text.tokenizer import CLS, SEP

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SPLITS = ("train", "validation")
# Bump when a code change changes the examples written for the same inputs (part of the fingerprint).
FORMAT_VERSION = 1
# (a_src, a_lo, a_hi, b_src, b_lo, b_hi, next_sentence_label): A = a_src[a_lo:a_hi], B likewise
Instance = tuple[np.ndarray, int, int, np.ndarray, int, int, int]


@dataclass
class TokenizedDocument:
    key: int  # distinguishes documents when drawing a random next segment
    tokens: np.ndarray  # int32 ids of all segments, concatenated
    bounds: list[int]  # segment i is tokens[bounds[i]:bounds[i + 1]]


def features():
    """Column types as `datasets` gives tokenizer outputs (int32 ids, int8 type ids and masks)."""
    import datasets

    return datasets.Features({
        "input_ids": datasets.List(datasets.Value("int32")),
        "token_type_ids": datasets.List(datasets.Value("int8")),
        "special_tokens_mask": datasets.List(datasets.Value("int8")),
        "next_sentence_label": datasets.Value("int64"),
    })


def split_of(doc_id: str, validation_fraction: float) -> str:
    """"validation" for a stable `validation_fraction` of document ids, else "train"."""
    # Salted: bertops.data.build splits tasks (and removes their held-out documents from the
    # corpus) by the unsalted sha256 of the id, so an unsalted hash here would pick from an
    # emptied range and hold out no documents of those sources.
    key = b"pretraining_data/validation:" + doc_id.encode("utf-8")
    h = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    return "validation" if h < validation_fraction * 2**64 else "train"


def iter_corpus(files: Iterable[str | Path]) -> Iterator[tuple[str, str]]:
    """(id, text) of every document in data/corpus/*.jsonl files, taking one document from each
    file in turn, so any stretch of the stream (and the random-next pool) mixes the sources."""
    from bertops.io import read_jsonl

    def records(path):
        for n, rec in enumerate(read_jsonl(path), 1):
            if not isinstance(rec.get("id"), str) or not isinstance(rec.get("text"), str):
                raise DataError(path, rec.get("id", f"#{n}"), "corpus record has string id and text")
            yield rec["id"], rec["text"]

    streams = [records(f) for f in files]
    while streams:
        for stream in list(streams):
            doc = next(stream, None)
            if doc is None:
                streams.remove(stream)
            else:
                yield doc


def tokenize_documents(tokenizer: Tokenizer, texts: list[str], first_key: int = 0
                       ) -> list[TokenizedDocument]:
    """Sentence-split and tokenize documents in one `encode_batch_fast` call (parallel, no offsets).
    Documents left without tokens are dropped."""
    sentences = [split_sentences(t) for t in texts]
    encodings = tokenizer.encode_batch_fast(list(chain.from_iterable(sentences)),
                                            add_special_tokens=False)
    lengths = [len(e) for e in encodings]
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int32, sum(lengths))
    docs, start, seg = [], 0, 0
    for i, doc_sentences in enumerate(sentences):
        bounds = [0]
        for n in lengths[seg:seg + len(doc_sentences)]:
            if n:  # a "sentence" of only control characters tokenizes to nothing
                bounds.append(bounds[-1] + n)
        seg += len(doc_sentences)
        if bounds[-1]:
            docs.append(TokenizedDocument(first_key + i, ids[start:start + bounds[-1]], bounds))
        start += bounds[-1]
    return docs


class RandomNextPool:
    """Where random next segments (label 1) come from: a reservoir (Vitter's algorithm R) of text
    windows of the documents seen so far, uniform over them and bounded in size.

    The reference draws a random document from the whole corpus, then a random sentence in it;
    a streaming pass cannot see the whole corpus, so we keep `capacity` windows, each starting at a
    random segment and `window_tokens` long, one window per `window_tokens` of text offered. The
    draw is thus uniform over text rather than over documents, and over the documents streamed so
    far (interleaved sources, see iter_corpus) rather than over all of them.
    """

    def __init__(self, capacity: int, window_tokens: int, rng: random.Random):
        self.capacity, self.window_tokens, self.rng = capacity, window_tokens, rng
        self.windows: list[TokenizedDocument] = []
        self.offered = 0

    def add(self, doc: TokenizedDocument) -> None:
        n_windows = -(-doc.bounds[-1] // self.window_tokens)
        for _ in range(n_windows):
            self.offered += 1
            if len(self.windows) < self.capacity:
                self.windows.append(self._window(doc))
            else:
                j = self.rng.randrange(self.offered)
                if j < self.capacity:
                    self.windows[j] = self._window(doc)

    def _window(self, doc: TokenizedDocument) -> TokenizedDocument:
        b = doc.bounds
        first = self.rng.randrange(len(b) - 1)
        last = min(bisect.bisect_left(b, b[first] + self.window_tokens), len(b) - 1)
        # a copy, so the pool does not keep whole batches of documents alive
        return TokenizedDocument(doc.key, doc.tokens[b[first]:b[last]].copy(),
                                 [x - b[first] for x in b[first:last + 1]])

    def sample(self, exclude_key: int) -> TokenizedDocument | None:
        """A window from a document other than `exclude_key`, or None if the pool has none."""
        if not self.windows:
            return None
        for _ in range(10):  # the reference also tries 10 times; then look at every window
            w = self.windows[self.rng.randrange(len(self.windows))]
            if w.key != exclude_key:
                return w
        others = [w for w in self.windows if w.key != exclude_key]
        return self.rng.choice(others) if others else None


def truncate_seq_pair(len_a: int, len_b: int, max_num_tokens: int, rng: random.Random
                      ) -> tuple[int, int, int, int]:
    """Tokens to drop (a_front, a_back, b_front, b_back) so that A + B fits max_num_tokens.

    Same distribution as the reference loop (drop one token from the longer segment, B on ties,
    from the front or the back with probability 1/2) in O(1) calls instead of one per token:
    the loop first levels the longer segment down, then alternates B, A, B, ...
    """
    excess = len_a + len_b - max_num_tokens
    if excess <= 0:
        return 0, 0, 0, 0
    if len_a > len_b:
        cut_a, cut_b = min(excess, len_a - len_b), 0
    else:
        cut_a, cut_b = 0, min(excess, len_b - len_a)
    rest = excess - cut_a - cut_b
    cut_a, cut_b = cut_a + rest // 2, cut_b + (rest + 1) // 2
    # each dropped token is a fair coin flip between front and back: popcount of random bits
    a_front = rng.getrandbits(cut_a).bit_count() if cut_a else 0
    b_front = rng.getrandbits(cut_b).bit_count() if cut_b else 0
    return a_front, cut_a - a_front, b_front, cut_b - b_front


def create_instances_from_document(doc: TokenizedDocument, pool: RandomNextPool,
                                   max_seq_length: int, short_seq_prob: float,
                                   rng: random.Random) -> list[Instance]:
    """One pass of the reference `create_instances_from_document` over one document."""
    max_num_tokens = max_seq_length - 3  # [CLS], [SEP], [SEP]
    # Usually fill the whole sequence; sometimes a shorter one, so that fine-tuning on short
    # inputs is not a distribution shift. Chosen once per document, as in the reference.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    bounds, tokens, n = doc.bounds, doc.tokens, len(doc.bounds) - 1
    instances: list[Instance] = []
    chunk_start, i = 0, 0
    while i < n:
        if i == n - 1 or bounds[i + 1] - bounds[chunk_start] >= target_seq_length:
            n_chunk = i + 1 - chunk_start
            a_end = chunk_start + (rng.randint(1, n_chunk - 1) if n_chunk >= 2 else 1)
            a_lo, a_hi = bounds[chunk_start], bounds[a_end]
            random_next = n_chunk == 1 or rng.random() < 0.5
            window = pool.sample(doc.key) if random_next else None
            if window is not None:
                # B: segments of another document, from a random one, up to the length left
                wb = window.bounds
                j = min(bisect.bisect_left(wb, target_seq_length - (a_hi - a_lo), 1), len(wb) - 1)
                b_src, b_lo, b_hi, label = window.tokens, 0, wb[j], 1
                i = a_end - 1  # put the unused segments back
            elif n_chunk >= 2:
                # the real continuation (also the fallback when no other document is available)
                b_src, b_lo, b_hi, label = tokens, a_hi, bounds[i + 1], 0
            else:  # a lone segment and no other document to pair it with
                chunk_start, i = i + 1, i + 1
                continue
            af, ab, bf, bb = truncate_seq_pair(a_hi - a_lo, b_hi - b_lo, max_num_tokens, rng)
            instances.append((tokens, a_lo + af, a_hi - ab, b_src, b_lo + bf, b_hi - bb, label))
            chunk_start = i + 1
        i += 1
    return instances


def instances_to_table(instances: list[Instance], cls_id: int, sep_id: int):
    """A pyarrow Table of "[CLS] A [SEP] B [SEP]" examples, built with numpy (no per-token Python)."""
    import pyarrow as pa

    cls, sep = np.array([cls_id], np.int32), np.array([sep_id], np.int32)
    parts: list[np.ndarray] = []
    for a_src, a_lo, a_hi, b_src, b_lo, b_hi, _ in instances:
        parts += (cls, a_src[a_lo:a_hi], sep, b_src[b_lo:b_hi], sep)
    n = len(instances)
    len_a = np.fromiter((x[2] - x[1] for x in instances), np.int32, n)
    len_b = np.fromiter((x[5] - x[4] for x in instances), np.int32, n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(len_a + len_b + 3, out=offsets[1:])
    input_ids = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    # 0 for [CLS] A [SEP], 1 for B [SEP]
    token_type_ids = np.repeat(np.tile(np.array([0, 1], np.int8), n),
                               np.stack([len_a + 2, len_b + 1], axis=1).ravel())
    special = np.zeros(len(input_ids), np.int8)
    special[offsets[:-1]] = 1
    special[offsets[:-1] + len_a + 1] = 1
    special[offsets[1:] - 1] = 1
    labels = np.fromiter((x[6] for x in instances), np.int64, n)
    return pa.table({
        "input_ids": pa.ListArray.from_arrays(offsets, input_ids),
        "token_type_ids": pa.ListArray.from_arrays(offsets, token_type_ids),
        "special_tokens_mask": pa.ListArray.from_arrays(offsets, special),
        "next_sentence_label": pa.array(labels),
    })


class _SplitBuilder:
    """Examples of one split: its own random stream and pool, written batch by batch to Arrow."""

    def __init__(self, split: str, path: Path, seed: int, pool_size: int, max_seq_length: int):
        from datasets.arrow_writer import ArrowWriter

        self.rng = random.Random(f"{seed}:{split}")
        self.pool = RandomNextPool(pool_size, max_seq_length - 3, self.rng)
        self.writer = ArrowWriter(features=features(), path=str(path))
        self.path = path
        self.stats = {"documents": 0, "corpus_tokens": 0, "examples": 0, "tokens": 0,
                      "next_sentence_label_0": 0, "next_sentence_label_1": 0}

    def add(self, docs: list[TokenizedDocument], *, max_seq_length: int, short_seq_prob: float,
            dupe_factor: int, cls_id: int, sep_id: int) -> None:
        for doc in docs:  # first, so that the first documents have others to pair with
            self.pool.add(doc)
        instances: list[Instance] = []
        for doc in docs:
            for _ in range(dupe_factor):
                instances += create_instances_from_document(
                    doc, self.pool, max_seq_length, short_seq_prob, self.rng)
        # Neighbouring examples overlap (same document, dupe passes): shuffle within the batch.
        # The order across batches stays the corpus order; the training loader shuffles anyway.
        self.rng.shuffle(instances)
        table = instances_to_table(instances, cls_id, sep_id)
        self.writer.write_table(table)
        s = self.stats
        s["documents"] += len(docs)
        s["corpus_tokens"] += sum(d.bounds[-1] for d in docs)
        s["examples"] += len(instances)
        s["tokens"] += sum(x[2] - x[1] + x[5] - x[4] + 3 for x in instances)
        ones = sum(x[6] for x in instances)
        s["next_sentence_label_1"] += ones
        s["next_sentence_label_0"] += len(instances) - ones

    def finish(self, fingerprint: str):
        import datasets
        from datasets.table import MemoryMappedTable

        self.writer.finalize()
        return datasets.Dataset(MemoryMappedTable.from_file(str(self.path)),
                                info=datasets.DatasetInfo(features=features()),
                                fingerprint=fingerprint)


def build_pretraining_data(documents: Iterable[tuple[str, str]], tokenizer: Tokenizer,
                           out_dir: str | Path, *, max_seq_length: int = 128,
                           short_seq_prob: float = 0.1, dupe_factor: int = 2,
                           validation_fraction: float = 0.05, seed: int = 1234,
                           random_next_pool_size: int = 20000, batch_chars: int = 2_000_000,
                           progress: Callable[[int], None] | None = None) -> dict:
    """Write a DatasetDict (train/validation) of NSP examples to `out_dir` atomically; return stats.

    `documents` yields (id, text); a document goes to "validation" by a stable hash of its id.
    The output bytes depend only on the documents, the tokenizer and these arguments.
    `progress(n_chars)` is called after each batch.
    """
    import datasets

    from bertops.io import atomic_path

    if max_seq_length < 8:
        raise ValueError("max_seq_length must be at least 8")
    cls_id, sep_id = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    config = dict(max_seq_length=max_seq_length, short_seq_prob=short_seq_prob,
                  dupe_factor=dupe_factor, validation_fraction=validation_fraction, seed=seed,
                  random_next_pool_size=random_next_pool_size, batch_chars=batch_chars)
    # dataset fingerprint from the inputs, so that state.json is the same bytes on every run
    digest = hashlib.blake2b(json.dumps([FORMAT_VERSION, config], sort_keys=True).encode(),
                             digest_size=8)
    digest.update(tokenizer.to_str().encode())
    kw = dict(max_seq_length=max_seq_length, short_seq_prob=short_seq_prob,
              dupe_factor=dupe_factor, cls_id=cls_id, sep_id=sep_id)
    start = time.perf_counter()
    with atomic_path(out_dir) as tmp:
        builders = {s: _SplitBuilder(s, tmp.parent / f"{s}.arrow", seed, random_next_pool_size,
                                     max_seq_length) for s in SPLITS}
        batch: dict[str, list[str]] = {s: [] for s in SPLITS}
        n_docs = n_chars = batch_first_doc = batch_n_chars = 0

        def flush():
            # keys: documents read before this batch + index in the split's list, unique per split
            for s, texts in batch.items():
                if texts:
                    docs = tokenize_documents(tokenizer, texts, first_key=batch_first_doc)
                    builders[s].add(docs, **kw)
                    texts.clear()
            if progress:
                progress(n_chars)

        for doc_id, text in documents:
            digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
            batch[split_of(doc_id, validation_fraction)].append(text)
            n_docs += 1
            n_chars += len(text)
            batch_n_chars += len(text)
            if batch_n_chars >= batch_chars:
                flush()
                batch_first_doc, batch_n_chars = n_docs, 0
        flush()
        fingerprint = digest.hexdigest()
        dd = datasets.DatasetDict({s: b.finish(f"{fingerprint}-{s}") for s, b in builders.items()})
        dd.save_to_disk(str(tmp))
    seconds = time.perf_counter() - start
    splits = {s: b.stats for s, b in builders.items()}
    total = {k: sum(st[k] for st in splits.values()) for k in splits["train"]}
    for st in (*splits.values(), total):
        st["random_next_fraction"] = st["next_sentence_label_1"] / max(st["examples"], 1)
    return {"splits": splits, "total": total, "seconds": seconds,
            "corpus_tokens_per_s": total["corpus_tokens"] / seconds,
            "tokens_per_s": total["tokens"] / seconds, "fingerprint": fingerprint, **config}
