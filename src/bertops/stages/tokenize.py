"""Stage `tokenize`: WordPiece tokenizer + NSP pretraining examples from the corpus.

Inputs: data/corpus/<source>.jsonl for each of `data.corpus_sources` (all *.jsonl when empty), and,
for task-adaptive pretraining, the train splits of the tasks named in `pretraining_data.task_texts`
(bertops.text.task_texts: validation/test sentences of every task are kept out; data/ is not changed).
Outputs: `tokenizer.out_dir` (a transformers tokenizer dir), `pretraining_data.out_dir` (DatasetDict
train/validation of unmasked "[CLS] A [SEP] B [SEP]" examples), `pretraining_data.stats_path`
(examples, tokens, NSP label balance, seconds, tokens/s per split); all written atomically and
logged to MLflow. The same params and corpus give the same bytes.
"""

from __future__ import annotations

import time
from pathlib import Path

from bertops import tracking
from bertops.config import DataParams, Params
from bertops.errors import BertopsError
from bertops.io import atomic_path, write_json, write_jsonl


def corpus_files(data: DataParams, sources: list[str] | None = None) -> list[Path]:
    """The corpus files to pretrain on: `sources` (pretraining_data.corpus_sources, a subset of what
    data/ holds) or else data.corpus_sources (all *.jsonl when empty)."""
    corpus_dir = Path(data.dir) / "corpus"
    sources = data.corpus_sources if sources is None else sources
    if sources:
        files = [corpus_dir / f"{source}.jsonl" for source in sources]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise BertopsError(f"corpus files missing: {', '.join(missing)} (run `bertops data fetch`)")
        return files
    files = sorted(corpus_dir.glob("*.jsonl"))
    if not files:
        raise BertopsError(f"no corpus files in {corpus_dir} (run `bertops data fetch`)")
    return files


def write_task_texts(params: Params) -> dict:
    """Write the task-adaptive documents (`pretraining_data.task_texts`) to `task_texts_path`;
    return per-task counts (paragraphs, held-out sentences dropped, documents)."""
    from bertops.text.task_texts import held_out_sentences, task_train_documents

    dp = params.pretraining_data
    unknown = sorted(set(dp.task_texts) - set(params.tasks))
    if unknown:
        raise BertopsError(f"pretraining_data.task_texts: unknown task(s) {unknown}; tasks: {sorted(params.tasks)}")
    counts: dict = {}
    # held out: the validation/test sentences of every declared task, not only the ones used
    docs = task_train_documents(params.tasks, dp.task_texts, dp.task_texts_per_document,
                                held_out=held_out_sentences(params.tasks), stats=counts)
    if not docs:
        raise BertopsError(f"pretraining_data.task_texts {dp.task_texts}: no training text found")
    write_jsonl(dp.task_texts_path, docs)
    return counts


def main(params: Params) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from bertops.text.pretraining_data import build_pretraining_data, iter_corpus
    from bertops.text.tokenizer import save_tokenizer, train_wordpiece, wordpiece_from_vocab_file

    tp, dp = params.tokenizer, params.pretraining_data
    files = corpus_files(params.data, dp.corpus_sources)
    section = {"tokenizer": tp.model_dump(), "pretraining_data": dp.model_dump(),
               "corpus_files": [str(f) for f in files]}
    with tracking.stage_run("tokenize", section):
        start = time.perf_counter()
        task_text_stats = None
        if dp.task_texts:
            task_text_stats = write_task_texts(params)
            files = [*files, Path(dp.task_texts_path)]
        else:  # a declared output of the stage: empty when task-adaptive pretraining is off
            write_jsonl(dp.task_texts_path, [])
        if tp.vocab_file:
            tok = wordpiece_from_vocab_file(tp.vocab_file, tp.lowercase)
        else:
            tok = train_wordpiece(lambda: (text for _, text in iter_corpus(files)), tp.vocab_size,
                                  tp.min_frequency, tp.limit_alphabet, tp.lowercase)
        with atomic_path(tp.out_dir) as tmp:
            save_tokenizer(tok, tmp, tp.lowercase, tp.model_max_length)
        tokenizer_seconds = time.perf_counter() - start

        total_chars = sum(f.stat().st_size for f in files)  # bytes of JSON: a close upper bound
        with Progress(TextColumn("tokenize"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task("pretraining data", total=total_chars)
            stats = build_pretraining_data(
                iter_corpus(files), tok, dp.out_dir, max_seq_length=dp.max_seq_length,
                short_seq_prob=dp.short_seq_prob, dupe_factor=dp.dupe_factor,
                validation_fraction=dp.validation_fraction,
                seed=params.seed if dp.seed is None else dp.seed,
                random_next_pool_size=dp.random_next_pool_size, batch_chars=dp.batch_chars,
                progress=lambda n: bar.update(task, completed=n))
        stats["vocab_size"] = tok.get_vocab_size()
        stats["task_texts"] = task_text_stats
        stats["tokenizer_seconds"] = tokenizer_seconds
        stats["pretraining_data_seconds"] = stats.pop("seconds")
        stats["stage_seconds"] = time.perf_counter() - start
        stats_path = write_json(dp.stats_path, stats)

        tracking.log_metrics({
            "vocab_size": stats["vocab_size"], "tokenizer_seconds": tokenizer_seconds,
            "pretraining_data_seconds": stats["pretraining_data_seconds"],
            "stage_seconds": stats["stage_seconds"], "tokens_per_s": stats["tokens_per_s"],
            "corpus_tokens_per_s": stats["corpus_tokens_per_s"], **stats["splits"]})
        tracking.log_artifact(stats_path, "tokenize")
        tracking.log_artifact(tp.out_dir, "tokenizer")
    return {"tokenizer_dir": tp.out_dir, "pretraining_data_dir": dp.out_dir,
            "stats": str(stats_path), "vocab_size": stats["vocab_size"],
            "examples": {s: st["examples"] for s, st in stats["splits"].items()},
            "tokens": stats["total"]["tokens"], "seconds": round(stats["stage_seconds"], 2)}
