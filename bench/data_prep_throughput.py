"""Data preparation throughput: raw corpus text in, NSP training examples on disk out.

Measures, on the real corpus (data/corpus/*.jsonl) and in one process, the time of
  floor:   a bare Hugging Face `tokenizers` `encode_batch` of the same documents with the same
           trained tokenizer (no sentence split, no pairs, no writing): the true floor;
  encode:  a plain batch `tokenizer(texts)` over the documents (the trained tokenizer, loaded
           with AutoTokenizer, exactly as a user would encode the same text), and
  prepare: bertops' build_pretraining_data (sentence split + tokenize + NSP pairs + Arrow write),
and prints the median of --runs timed runs (after one warm-up run each) and each time as a ratio
against the floor and against encode (the target: prepare within 1.5x of encode). All take the
documents already in memory. Tokens/s counts corpus tokens (the text's WordPiece tokens, no
[CLS]/[SEP]) for all, so the tokens/s column is comparable down the table.

    .venv/bin/python bench/data_prep_throughput.py [--data-dir data] [--runs 5] [--threads 1] [--max-docs N]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bertops.env import apply_offline_env


def main(argv=None) -> int:
    apply_offline_env()
    from bertops.config import load_params
    from bertops.text.pretraining_data import build_pretraining_data, iter_corpus
    from bertops.text.tokenizer import load_tokenizer, save_tokenizer, train_wordpiece

    params = load_params()
    dp = params.pretraining_data
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=params.data.dir)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dupe-factor", type=int, action="append",
                    help=f"dupe_factor(s) to time (default: 1 and params' {dp.dupe_factor})")
    ap.add_argument("--threads", type=int, default=None,
                    help="tokenizers (Rayon) threads for every step (default: all cores)")
    ap.add_argument("--max-docs", type=int, default=None, help="only the first N documents (a quick run)")
    args = ap.parse_args(argv)
    if args.threads:  # before the tokenizers thread pool first starts
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    files = sorted(glob.glob(str(Path(args.data_dir) / "corpus" / "*.jsonl")))
    if not files:
        print(f"no corpus under {args.data_dir}/corpus: run `bertops data fetch` first", file=sys.stderr)
        return 2
    dupe_factors = args.dupe_factor or sorted({1, dp.dupe_factor})
    docs = list(iter_corpus(files))[:args.max_docs]
    texts = [t for _, t in docs]
    tp = params.tokenizer
    tok = train_wordpiece(lambda: iter(texts), tp.vocab_size, tp.min_frequency, tp.limit_alphabet,
                          tp.lowercase)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "sequence longer than 512" warnings for whole documents
    import datasets

    datasets.disable_progress_bars()
    floor_name, encode_name = "floor: tokenizers encode_batch", "encode: tokenizer(texts)"
    with tempfile.TemporaryDirectory() as tmp:
        hf = load_tokenizer(save_tokenizer(tok, Path(tmp) / "tokenizer", tp.lowercase))

        def floor():
            return sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))

        def encode():
            enc = hf(texts)
            return sum(len(ids) - 2 for ids in enc["input_ids"])

        def prepare(dupe_factor):
            return build_pretraining_data(
                docs, tok, Path(tmp) / "pretraining_data", max_seq_length=dp.max_seq_length,
                short_seq_prob=dp.short_seq_prob, dupe_factor=dupe_factor,
                validation_fraction=dp.validation_fraction, seed=params.seed,
                random_next_pool_size=dp.random_next_pool_size, batch_chars=dp.batch_chars)

        def timed(fn, *a):
            t, c = time.perf_counter(), time.process_time()
            out = fn(*a)
            return (time.perf_counter() - t, time.process_time() - c), out

        jobs = {floor_name: (floor,), encode_name: (encode,)}
        jobs |= {f"prepare dupe_factor={d}": (prepare, d) for d in dupe_factors}
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in jobs}
        results = {}
        for run in range(args.runs + 1):  # run 0 is the warm-up; jobs interleaved, so drift hits all
            for name, (fn, *a) in jobs.items():
                dt, results[name] = timed(fn, *a)
                if run:
                    times[name].append(dt)
    corpus_tokens = results[encode_name]
    if results[floor_name] != corpus_tokens:
        print(f"  note: the floor saw {results[floor_name]} tokens, encode {corpus_tokens}")
    med = {name: statistics.median(t for t, _ in ts) for name, ts in times.items()}
    cpu = {name: statistics.median(c for _, c in ts) for name, ts in times.items()}
    threads = os.environ.get("RAYON_NUM_THREADS", f"all {os.cpu_count()}")
    print(f"corpus: {len(docs)} documents, {sum(map(len, texts)) / 1e6:.1f} M chars, "
          f"{corpus_tokens / 1e6:.2f} M tokens (vocab {tok.get_vocab_size()}); median of {args.runs} runs; "
          f"tokenizers threads: {threads}")
    print("wall: elapsed seconds; cpu: CPU seconds of all threads (steadier on a shared machine); "
          "x floor / x encode: time ratios (lower is better)")
    print(f"{'step':<32}{'wall s':>8}{'corpus tokens/s':>17}{'x floor':>9}{'x encode':>10}"
          f"{'cpu s':>8}{'cpu x floor':>13}{'cpu x encode':>14}{'examples':>10}")
    for name in times:
        r = results[name]
        n_ex = r["total"]["examples"] if isinstance(r, dict) else ""
        if isinstance(r, dict) and r["total"]["corpus_tokens"] != corpus_tokens:
            print(f"  note: {name} saw {r['total']['corpus_tokens']} corpus tokens")
        print(f"{name:<32}{med[name]:>8.2f}{corpus_tokens / med[name]:>17,.0f}"
              f"{med[name] / med[floor_name]:>8.2f}x{med[name] / med[encode_name]:>9.2f}x"
              f"{cpu[name]:>8.2f}{cpu[name] / cpu[floor_name]:>12.2f}x{cpu[name] / cpu[encode_name]:>13.2f}x{n_ex:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
