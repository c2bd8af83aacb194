"""The pretraining driver: `fit_pretraining`, what the pretrain stage calls.

It builds the pieces (one concern per module, as in lightning-hydra-template):
- bertops.train.pretrain_data: PretrainingDataModule, artifacts/pretraining_data -> masked batches;
- bertops.train.pretrain_module: BertPretrainingModule, the LightningModule;
- bertops.train.checkpointing: atomic checkpoints, SIGTERM checkpoint, resume lookup;
then trains (or resumes), evaluates on the validation split and saves the model.

Resuming a killed run restores everything the next step depends on:
- weights, AdamW state, LR schedule, global step: Lightning's checkpoint (`last.ckpt`);
- data position: PretrainingDataModule's state (batches consumed);
- masking: each batch's masking seed is a function of (seed, batch number), not of a running RNG;
- dropout: torch/CUDA/numpy/python RNG states are saved with the checkpoint and put back just
  before the first resumed step; the data loaders use their own generators so that building
  them does not move the global RNG.
So a resumed run reproduces the uninterrupted run (tests/integration/test_pretrain.py checks the
weights match). With a time budget (`pretrain.max_time`, bertops.train.pretrain_schedule) training
stops at the deadline or max_steps, whichever comes first, the lr reaches zero at it, and the
elapsed training time travels in the checkpoint, so a resumed run keeps the same schedule and
deadline; such runs depend on the machine's speed and are not bit-reproducible.
last.ckpt is written every `checkpoint_every_n_steps`, at the end, and when the run
is stopped by SIGTERM (at the step reached; the process then exits with status 143).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from bertops.errors import DataError
from bertops.train.checkpointing import (
    AtomicCheckpointIO,
    CheckpointOnSigterm,
    CsvLogInCheckpoint,
    fetch_stored_checkpoint,
    find_resume_checkpoint,
    fingerprint,
    logged_rows_before,
    restore_csv_log,
    sigterm_exits_nonzero,
)
from bertops.train.flops import FLOP_CONVENTION, model_flops_per_token
from bertops.train.precision import on_gpu, resolve_precision
from bertops.train.pretrain_data import (
    PretrainingDataModule,
    load_pretraining_data,
    max_sequence_length,
    most_frequent,
)
from bertops.train.pretrain_module import BertPretrainingModule

if TYPE_CHECKING:
    from bertops.config import Params

# Settings that change what a resumed run would compute; a checkpoint made with other values
# is not resumed (it is deleted and training starts over).
_FINGERPRINT_KEYS = (
    "max_steps", "max_time", "dropout", "batch_size", "accumulate_grad_batches", "learning_rate",
    "warmup_steps", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "mlm_probability",
    "mask_replace_prob", "random_replace_prob", "whole_word_mask", "pad_to_multiple_of",
    "max_predictions_per_seq", "compile", "precision", "short_seq_length", "short_seq_fraction",
    "decay_fraction", "mlm_probability_final")


def _fingerprint(params: Params, dataset: Any, tokenizer: Any) -> str:
    p = params.pretrain.model_dump()
    return fingerprint({"seed": params.seed, "model": params.model.model_dump(),
                        "pretrain": {k: p[k] for k in _FINGERPRINT_KEYS}, "vocab_size": len(tokenizer),
                        "data": [dataset[s]._fingerprint for s in ("train", "validation")]})


def fit_pretraining(params: Params, data_dir: str | Path, tokenizer_dir: str | Path,
                    out_dir: str | Path, loggers: list | None = None, callbacks: list | None = None,
                    checkpoint_store: str | None = None) -> dict:
    """Pretrain (or resume), evaluate on the validation split, save the model; returns metrics.

    Writes out_dir/checkpoints/last.ckpt (every `checkpoint_every_n_steps`, on SIGTERM, at the end),
    out_dir/model (BertForPreTraining.save_pretrained + tokenizer files) and out_dir/metrics.json.
    With `checkpoint_store` (a directory URL: s3://bucket/prefix or a plain path), every checkpoint
    is also copied to <checkpoint_store>/pretrain/<fingerprint>/, and a run whose own folder has no
    checkpoint as far along (another machine, a fresh clone) first fetches it from there: the store
    is keyed by what the run computes, so only a run with the same settings and data resumes it.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from transformers import AutoTokenizer

    from bertops.io import atomic_path, write_json
    from bertops.model.presets import bert_config

    p, out_dir = params.pretrain, Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    dataset = load_pretraining_data(data_dir)
    config = bert_config(params.model.preset, len(tokenizer), params.model.overrides,
                         pad_token_id=tokenizer.pad_token_id)
    longest = max(max_sequence_length(dataset[s]) for s in ("train", "validation"))
    if longest > config.max_position_embeddings:
        raise DataError(data_dir, None, "sequences fit max_position_embeddings",
                        f"longest example has {longest} tokens > {config.max_position_embeddings}")
    accelerator = p.accelerator
    precision = resolve_precision(p.precision, accelerator)
    # A GPU step is shorter than collating a big batch in the training process: use workers.
    gpu_workers = min(4, os.cpu_count() or 1) if on_gpu(accelerator) else 0
    num_workers = p.num_workers if p.num_workers is not None else gpu_workers

    # Static shapes for torch.compile: fixed sequence length and a fixed number of MLM rows.
    static = p.compile or p.max_predictions_per_seq is not None
    pad_to_length = longest if p.compile else None
    per_seq = p.max_predictions_per_seq or math.ceil(p.mlm_probability * longest) + 2
    max_predictions = p.batch_size * per_seq if static else None

    fingerprint = _fingerprint(params, dataset, tokenizer)
    ckpt_dir = out_dir / "checkpoints"
    store = f"{checkpoint_store.rstrip('/')}/pretrain/{fingerprint}" if checkpoint_store else None
    if store and p.resume:
        fetch_stored_checkpoint(ckpt_dir, store, fingerprint)
    resume, started_step, saved_log = find_resume_checkpoint(ckpt_dir, fingerprint) if p.resume else (None, 0, [])

    L.seed_everything(params.seed, workers=True, verbose=False)
    module = BertPretrainingModule(
        config.to_dict(), learning_rate=p.learning_rate, warmup_steps=p.warmup_steps,
        max_steps=p.max_steps, weight_decay=p.weight_decay, adam_beta1=p.adam_beta1,
        adam_beta2=p.adam_beta2, adam_epsilon=p.adam_epsilon, max_predictions=max_predictions,
        compile=p.compile, log_every_n_steps=p.log_every_n_steps, peak_tflops=p.peak_tflops,
        fingerprint=fingerprint, max_time=p.max_time, dropout=p.dropout,
        short_seq_length=p.short_seq_length, short_seq_fraction=p.short_seq_fraction,
        decay_fraction=p.decay_fraction, mlm_probability=p.mlm_probability,
        mlm_probability_final=p.mlm_probability_final)
    datamodule = PretrainingDataModule(
        dataset, tokenizer, p.batch_size, params.seed, p.max_steps, p.accumulate_grad_batches,
        mlm_probability=p.mlm_probability, mask_replace_prob=p.mask_replace_prob,
        random_replace_prob=p.random_replace_prob, whole_word_mask=p.whole_word_mask,
        pad_to_multiple_of=p.pad_to_multiple_of, pad_to_length=pad_to_length,
        num_workers=num_workers, eval_batch_size=p.eval_batch_size)
    eval_every = p.eval_every_n_steps if p.eval_every_n_steps and p.eval_every_n_steps < p.max_steps else 0
    periodic = ModelCheckpoint(dirpath=str(ckpt_dir), every_n_train_steps=p.checkpoint_every_n_steps,
                               save_top_k=0, save_last=True, enable_version_counter=False)
    # keep_best: the model saved is the in-training validation's best held-out MLM loss (many epochs of
    # a small corpus on a GPU overfit); it needs in-training validation (eval_every_n_steps)
    best = (ModelCheckpoint(dirpath=str(ckpt_dir), filename="best", monitor="val/mlm_loss", mode="min",
                            save_top_k=1, enable_version_counter=False)
            if p.keep_best and eval_every else None)
    loggers = loggers if loggers is not None else [CSVLogger(str(out_dir), name="logs", version="")]
    csv_logs = [Path(lg.log_dir) / "metrics.csv" for lg in loggers if isinstance(lg, CSVLogger)]
    # the curve travels in the checkpoint: `dvc repro` deletes logs/metrics.csv before a resumed run
    keep_log = [CsvLogInCheckpoint(csv_logs[0])] if csv_logs else []
    common = {"accelerator": accelerator, "devices": p.devices, "num_nodes": p.num_nodes,
              "strategy": p.strategy, "precision": precision, "enable_progress_bar": sys.stderr.isatty(),
              "use_distributed_sampler": False}  # the batch sampler shards by rank itself
    trainer = L.Trainer(
        **common, max_steps=p.max_steps, max_epochs=-1,
        accumulate_grad_batches=p.accumulate_grad_batches, gradient_clip_val=p.max_grad_norm,
        gradient_clip_algorithm="norm", log_every_n_steps=p.log_every_n_steps,
        val_check_interval=eval_every * p.accumulate_grad_batches if eval_every else None,
        check_val_every_n_epoch=None if eval_every else 1,
        limit_val_batches=p.limit_val_batches if eval_every else 0, num_sanity_val_steps=0,
        callbacks=[periodic, *([best] if best else []), CheckpointOnSigterm(ckpt_dir / "last.ckpt"), *keep_log,
                   *(callbacks or [])],
        plugins=[AtomicCheckpointIO(store=store)], logger=loggers, default_root_dir=str(out_dir))

    # the MLM baseline is also logged by in-training validation, next to the model's accuracy
    module.most_frequent_token_id, _ = most_frequent(dataset["train"], "input_ids",
                                                      set(tokenizer.all_special_ids))
    if resume is not None:
        rank_zero_info(f"resuming from {resume} at step {started_step}")
    # Lightning's CSV logger starts its file afresh; keep the rows of the interrupted run.
    earlier = {path: logged_rows_before(path, saved_log, started_step) for path in csv_logs}
    t0 = time.perf_counter()
    with warnings.catch_warnings(), sigterm_exits_nonzero():
        # Lightning cannot see that our sampler resumes mid-epoch by itself (see module docstring).
        warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    train_seconds = time.perf_counter() - t0
    if trainer.is_global_zero:
        for path, rows in earlier.items():  # every path, resuming at the end included, writes the log
            restore_csv_log(path, rows)
    # Saved at the end even when the periodic one fell on the last step: that one was written
    # before the last row was logged. A re-run resumes here, trains nothing, and has the whole log.
    trainer.save_checkpoint(str(ckpt_dir / "last.ckpt"))

    best_step = None
    if best is not None and best.best_model_path and Path(best.best_model_path).is_file():
        import torch

        saved = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(saved["state_dict"])
        best_step = int(saved["global_step"])
        rank_zero_info(f"keep_best: the model of step {best_step} (val/mlm_loss {float(best.best_model_score):.4f})")

    evaluator = L.Trainer(**common, logger=False, limit_val_batches=p.eval_max_batches,
                          enable_model_summary=False, enable_checkpointing=False)
    with sigterm_exits_nonzero():
        metrics = evaluate_pretraining(evaluator, module, datamodule, dataset)
    metrics["warnings"] = no_better_than_baselines(metrics)
    for message in metrics["warnings"]:
        rank_zero_warn(message)
    # Throughput: median over the logging windows, the first (warm-up, compilation) left out.
    # train_tokens_per_s counts padded positions (the work done); train_nonpad_tokens_per_s real tokens.
    windows = module.perf_history[1:] or module.perf_history
    perf = {k: float(np.median([w[f"perf/{k}"] for w in windows])) if windows else None
            for k in ("tokens_per_s", "nonpad_tokens_per_s", "mfu", "mfu_stock_flops")}
    world = trainer.world_size  # every rank sees batches of the same size: rank 0's count x ranks
    metrics.update({"global_step": int(trainer.global_step), "resumed_from_step": started_step,
                    "train_seconds": round(train_seconds, 2),
                    # whole run, resumed parts included (they travel in the checkpoint)
                    "train_seconds_total": round(module.training_clock.elapsed(), 2),
                    "train_tokens": module.tokens_reached() * world,
                    "train_positions": module.positions_seen * world,
                    "max_time": p.max_time, "best_step": best_step, "train_tokens_per_s": perf["tokens_per_s"],
                    "train_nonpad_tokens_per_s": perf["nonpad_tokens_per_s"],
                    "mfu": perf["mfu"], "mfu_stock_flops": perf["mfu_stock_flops"]})
    info = {"preset": params.model.preset, "num_parameters": sum(x.numel() for x in module.model.parameters()),
            "precision": precision, "flop_convention": FLOP_CONVENTION,
            "flops_per_token_stock": model_flops_per_token(config, longest),
            "max_seq_length": longest, "vocab_size": config.vocab_size,
            "train_examples": len(dataset["train"]), "validation_examples": len(dataset["validation"])}
    result = {"metrics": metrics, "info": info, "model_dir": str(out_dir / "model"),
              "metrics_path": str(out_dir / "metrics.json"), "checkpoint": str(ckpt_dir / "last.ckpt")}
    if trainer.is_global_zero:
        with atomic_path(out_dir / "model") as tmp:
            module.model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
        write_json(out_dir / "metrics.json", {**metrics, "info": info})
    return result


# Held-out accuracy this close to the trivial baseline means the objective taught nothing: the
# budget ended on the early plateau (where MLM predicts frequent tokens) or the representations
# collapsed. Fine-tuning from such an encoder can score below random weights (one CPU run with
# whole-word masking: MLM 4.4% vs 4.3%, NSP at the majority rate, downstream at the majority rate).
BASELINE_MARGIN = 0.01


def no_better_than_baselines(metrics: dict, margin: float = BASELINE_MARGIN) -> list[str]:
    """A warning for each held-out objective (MLM, NSP) whose accuracy is within `margin` of its
    trivial baseline (evaluate_pretraining's keys); an empty list when both learned something."""
    checks = (("MLM", "mlm_accuracy", "baseline_mlm_most_frequent_token_accuracy",
               "always predicting the most frequent token"),
              ("NSP", "nsp_accuracy", "baseline_nsp_majority_accuracy", "always predicting the majority label"))
    return [f"held-out {name} accuracy {metrics[key]:.1%} is not above {what} ({metrics[base]:.1%}): "
            f"pretraining taught the encoder nothing through {name}, and fine-tuning from it may score "
            "below random weights. Give it a longer budget (pretrain.max_time, pretrain.max_steps) or a "
            "lower pretrain.learning_rate, or undo the recipe change that caused it"
            for name, key, base, what in checks
            if metrics.get(key) is not None and metrics.get(base) is not None
            and metrics[key] <= metrics[base] + margin]


def evaluate_pretraining(trainer: L.Trainer, module: BertPretrainingModule,
                         datamodule: PretrainingDataModule, dataset: Any) -> dict:
    """Held-out MLM and NSP accuracy on the validation split (masked with fixed per-batch seeds,
    so every evaluation sees the same masks), next to trivial baselines: always predicting the
    most frequent non-special training token at every masked position, and always predicting the
    majority NSP label of the training split (module.most_frequent_token_id, set by fit_pretraining)."""
    nsp_majority, _ = most_frequent(dataset["train"], "next_sentence_label", set())
    nsp_val = np.asarray(dataset["validation"].data.column("next_sentence_label").to_numpy())
    t0 = time.perf_counter()
    val = {k: float(v) for k, v in trainer.validate(module, datamodule=datamodule, verbose=False)[0].items()}
    return {
        "mlm_accuracy": val["val/mlm_accuracy"], "mlm_loss": val["val/mlm_loss"],
        "mlm_perplexity": math.exp(min(val["val/mlm_loss"], 50.0)),
        "nsp_accuracy": val["val/nsp_accuracy"], "nsp_loss": val["val/nsp_loss"],
        "baseline_mlm_most_frequent_token_accuracy": val["val/mlm_baseline_accuracy"],
        "baseline_nsp_majority_accuracy": float((nsp_val == nsp_majority).mean()),
        "mlm_predictions": int(val["val/mlm_predictions"]), "nsp_examples": int(val["val/nsp_examples"]),
        "eval_seconds": round(time.perf_counter() - t0, 2),
    }
