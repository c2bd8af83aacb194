"""BERT pretraining with Lightning: data module, training module, and `fit_pretraining`.

One LightningDataModule (artifacts/pretraining_data -> dynamically masked batches) and one
LightningModule (stock `BertForPreTraining` trained through the sparse-MLM objective of
bertops.model.pretraining), as in lightning-hydra-template.

Resuming a killed run restores everything the next step depends on:
- weights, AdamW state, LR schedule, global step: Lightning's checkpoint (`last.ckpt`);
- data position: the training stream is one seeded, epoch-deterministic sequence of batches
  (PretrainingBatchSampler); the data module saves how many batches were consumed
  (global_step x accumulate_grad_batches) and the sampler restarts right after them;
- masking: each batch's masking seed is a function of (seed, batch number), not of a running RNG;
- dropout: torch/CUDA/numpy/python RNG states are saved with the checkpoint and put back just
  before the first resumed step; the data loaders use their own generators so that building
  them does not move the global RNG.
So a resumed run reproduces the uninterrupted run (tests/integration/test_pretrain.py checks the
weights match). last.ckpt is written every `checkpoint_every_n_steps`, at the end, and when the run
is stopped by SIGTERM (at the step reached; the process then exits with status 143).

Logged every `log_every_n_steps`: MLM loss/accuracy, NSP loss/accuracy, learning rate, tokens/s
and MFU. FLOPs follow bertops.train.flops.FLOP_CONVENTION (performance.md): `perf/mfu` uses the
FLOPs this sparse-head step executes, `perf/mfu_stock_flops` and `perf/model_tflops` the stock
"model FLOPs" convention (MLM head at every position), against a measured matmul ceiling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import random
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, Dataset, Sampler

from bertops.errors import BertopsError, DataError
from bertops.text.masking import PretrainingCollator, SeededBatch
from bertops.train.flops import FLOP_CONVENTION, executed_flops_per_token, measure_matmul_tflops, model_flops_per_token
from bertops.train.precision import on_gpu, resolve_precision

if TYPE_CHECKING:
    from bertops.config import Params

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("input_ids", "token_type_ids", "next_sentence_label")
# Settings that change what a resumed run would compute; a checkpoint made with other values
# is not resumed (it is deleted and training starts over).
_FINGERPRINT_KEYS = (
    "max_steps", "batch_size", "accumulate_grad_batches", "learning_rate", "warmup_steps",
    "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "mlm_probability",
    "mask_replace_prob", "random_replace_prob", "whole_word_mask", "pad_to_multiple_of",
    "max_predictions_per_seq", "compile", "precision")


def _batch_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


class PretrainingBatchSampler(Sampler):
    """Batches of (masking seed, example index) keys, resumable at any batch.

    Training (shuffle=True): an endless stream of data epochs, each a permutation seeded by
    (seed, epoch), cut into global batches of batch_size x world_size (the last partial one
    dropped); rank r takes slice r of each global batch. `num_batches` (the run's length) and
    `start_batch` (batches already consumed) make it one Lightning epoch that can resume.
    Evaluation (shuffle=False): every example once, in order, examples strided over ranks.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, shuffle: bool = True,
                 num_batches: int | None = None, start_batch: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.num_examples, self.batch_size, self.seed, self.shuffle = num_examples, batch_size, seed, shuffle
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        if shuffle:
            self.batches_per_epoch = num_examples // (batch_size * world_size)
            if self.batches_per_epoch == 0:
                raise BertopsError(f"{num_examples} training examples are fewer than one global batch "
                                   f"({batch_size} x {world_size} devices)")
            self.num_batches = num_batches if num_batches is not None else self.batches_per_epoch
        else:
            self._indices = np.arange(rank, num_examples, world_size)
            self.num_batches = math.ceil(len(self._indices) / batch_size)
        self._epoch_cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.num_batches

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_examples))
        return self._epoch_cache[1]

    def batch_indices(self, b: int) -> np.ndarray:
        if not self.shuffle:
            return self._indices[b * self.batch_size:(b + 1) * self.batch_size]
        epoch, k = divmod(b, self.batches_per_epoch)
        start = (k * self.world_size + self.rank) * self.batch_size
        return self._permutation(epoch)[start:start + self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b in range(self.start_batch, self.num_batches):
            seed = _batch_seed(self.seed, int(self.shuffle), b, self.rank)
            yield [(seed, int(i)) for i in self.batch_indices(b)]


class _KeyedDataset(Dataset):
    """A datasets.Dataset read a batch at a time; returns the batch with its masking seed."""

    def __init__(self, ds: Any):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.ds[key[1]]

    def __getitems__(self, keys: list[tuple[int, int]]) -> SeededBatch:
        rows = self.ds[[i for _, i in keys]]  # one columnar read instead of one per example
        examples = [dict(zip(rows, values)) for values in zip(*rows.values())]
        return SeededBatch(keys[0][0], examples)


def load_pretraining_data(data_dir: str | Path) -> Any:
    """The DatasetDict of artifacts/pretraining_data, checked against the contract."""
    from datasets import load_from_disk

    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise BertopsError(f"{data_dir} does not exist: run the tokenize stage first")
    dd = load_from_disk(str(data_dir))
    for split in ("train", "validation"):
        if split not in dd:
            raise DataError(data_dir, None, "splits train and validation", f"missing split {split!r}")
        missing = [c for c in REQUIRED_COLUMNS if c not in dd[split].column_names]
        if missing:
            raise DataError(data_dir / split, None, f"columns {', '.join(REQUIRED_COLUMNS)}",
                            f"missing {missing}")
        if len(dd[split]) == 0:
            raise DataError(data_dir / split, None, "at least one example", "split is empty")
    return dd


def max_sequence_length(ds: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.max(pc.list_value_length(ds.data.column("input_ids"))).as_py())


def _worker_init(worker_id: int, rank: int) -> None:
    """DataLoader workers ignore SIGTERM. Sent to the whole process group (systemd stopping a
    preempted VM, `kill -- -PGID`), it would kill them first and the main process would fail on its
    next batch ("DataLoader worker ... killed by signal") instead of finishing the step and saving
    last.ckpt (_CheckpointOnSigterm); the main process shuts its workers down as it exits."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", "0")):  # what Lightning sets when there is no worker_init_fn
        pl_worker_init_function(worker_id, rank)


class PretrainingDataModule(L.LightningDataModule):
    """Dynamically masked NSP pair batches from a pretraining DatasetDict."""

    def __init__(self, dataset: Any, tokenizer: Any, batch_size: int, seed: int, max_steps: int,
                 accumulate_grad_batches: int = 1, mlm_probability: float = 0.15,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                 whole_word_mask: bool = False, pad_to_multiple_of: int | None = 8,
                 pad_to_length: int | None = None, num_workers: int = 0,
                 eval_batch_size: int | None = None):
        super().__init__()
        self.dataset, self.tokenizer = dataset, tokenizer
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.seed, self.max_steps, self.accumulate_grad_batches = seed, max_steps, accumulate_grad_batches
        self.num_workers = num_workers
        self.collator = PretrainingCollator(
            tokenizer, mlm_probability=mlm_probability, mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob, whole_word_mask=whole_word_mask,
            pad_to_multiple_of=pad_to_multiple_of, pad_to_length=pad_to_length)
        self.consumed_batches = 0  # set by load_state_dict when resuming
        self._world = (0, 1)

    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        self._world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, sampler: PretrainingBatchSampler) -> DataLoader:
        on_cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(
            _KeyedDataset(self.dataset[split]), batch_sampler=sampler, collate_fn=self.collator,
            num_workers=self.num_workers, pin_memory=on_cuda, persistent_workers=self.num_workers > 0,
            # its own generator: creating the iterator must not draw from the global RNG, or a
            # resumed run's dropout would drift from the uninterrupted run's
            generator=torch.Generator().manual_seed(self.seed),
            worker_init_fn=partial(_worker_init, rank=self._world[0]))

    def train_dataloader(self) -> DataLoader:
        rank, world = self._world
        sampler = PretrainingBatchSampler(
            len(self.dataset["train"]), self.batch_size, self.seed, shuffle=True,
            num_batches=self.max_steps * self.accumulate_grad_batches,
            start_batch=self.consumed_batches, rank=rank, world_size=world)
        return self._loader("train", sampler)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._world
        sampler = PretrainingBatchSampler(len(self.dataset["validation"]), self.eval_batch_size,
                                          self.seed, shuffle=False, rank=rank, world_size=world)
        return self._loader("validation", sampler)

    def state_dict(self) -> dict:
        # Checkpoints are written at optimizer-step boundaries, so this is exact.
        trainer = self.trainer
        return {"consumed_batches": trainer.global_step * trainer.accumulate_grad_batches,
                "global_batch_size": self.batch_size * trainer.world_size}

    def load_state_dict(self, state: dict) -> None:
        self.consumed_batches = int(state["consumed_batches"])


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state((state["numpy"][0], np.asarray(state["numpy"][1], dtype=np.uint32),
                         *state["numpy"][2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class BertPretrainingModule(L.LightningModule):
    """MLM + NSP pretraining of a stock BertForPreTraining (`self.model`).

    FLOP convention for the logged MFU: see bertops.train.flops.FLOP_CONVENTION.
    """

    def __init__(self, model_config: dict, learning_rate: float = 1e-4, warmup_steps: int = 0,
                 max_steps: int = 1000, weight_decay: float = 0.01, adam_beta1: float = 0.9,
                 adam_beta2: float = 0.999, adam_epsilon: float = 1e-6,
                 max_predictions: int | None = None, compile: bool = False, fused_adamw: bool | None = None,
                 log_every_n_steps: int = 10, peak_tflops: float | None = None,
                 fingerprint: str = "", flop_convention: str = FLOP_CONVENTION):
        super().__init__()
        from transformers import BertConfig

        from bertops.model.pretraining import BertPretrainingObjective, build_pretraining_model

        self.save_hyperparameters()
        self.config = BertConfig.from_dict(model_config)
        self.objective = BertPretrainingObjective(build_pretraining_model(self.config), max_predictions)
        self.most_frequent_token_id: int | None = None  # for the MLM baseline during evaluation
        self._rng_to_restore: dict | None = None
        self._peak_tflops = peak_tflops
        self._window: dict[str, float] = {}
        self._last_logged_step = -1
        self._predicted = 0
        self._val_started = 0.0
        self.perf_history: list[dict[str, float]] = []  # one entry per logging window
        from torchmetrics import SumMetric

        self.val_sums = torch.nn.ModuleDict({k: SumMetric() for k in (
            "mlm_loss", "mlm_correct", "mlm_count", "mlm_baseline_correct", "nsp_loss", "nsp_correct",
            "nsp_count")})

    @property
    def model(self):
        """The stock transformers BertForPreTraining being trained."""
        return self.objective.model

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            # In place, so parameter names (and checkpoints) stay those of the stock model.
            self.objective.compile(dynamic=False)
            self._compiled = True

    # ---- training -------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.objective(**batch)
        self._predicted += out.predicted_positions
        n = batch["input_ids"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=n)
        self.log("train/mlm_loss", out.mlm_loss, batch_size=n)
        self.log("train/nsp_loss", out.nsp_loss, batch_size=n)
        self.log("train/mlm_accuracy", out.mlm_correct / out.mlm_count.clamp(min=1), batch_size=n)
        self.log("train/nsp_accuracy", out.nsp_correct / out.nsp_count.clamp(min=1), batch_size=n)
        if self.hparams.max_predictions is not None:
            self.log("train/mlm_dropped", out.mlm_dropped.float(), batch_size=n)
        return out.loss

    def on_train_start(self) -> None:
        if self._peak_tflops is None:
            dtype = torch.bfloat16 if "bf16" in str(self.trainer.precision) else torch.float32
            self._peak_tflops = measure_matmul_tflops(self.device, dtype)
        if self._rng_to_restore is not None:  # last thing before the first resumed step
            _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        self._reset_window()

    def _reset_window(self) -> None:
        self._window = {"start": time.perf_counter(), "tokens": 0.0, "predicted": 0.0, "seq_len": 0.0,
                        "batches": 0.0}
        self._predicted = 0

    def on_train_batch_end(self, outputs: Any, batch: dict, batch_idx: int) -> None:
        w = self._window
        w["tokens"] += batch["input_ids"].numel()
        w["seq_len"] += batch["input_ids"].shape[1]
        w["batches"] += 1
        w["predicted"] += self._predicted
        self._predicted = 0
        step = self.trainer.global_step
        if step == self._last_logged_step or step % self.hparams.log_every_n_steps:
            return
        self._last_logged_step = step
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = max(time.perf_counter() - w["start"], 1e-9)
        tokens_per_s = w["tokens"] / elapsed  # per device: padded positions processed
        seq_len = w["seq_len"] / w["batches"]
        executed = executed_flops_per_token(self.config, seq_len, w["predicted"] / w["tokens"])
        stock = model_flops_per_token(self.config, seq_len)
        metrics = {
            "perf/tokens_per_s": tokens_per_s * self.trainer.world_size,
            "perf/tflops": executed * tokens_per_s / 1e12,
            "perf/model_tflops": stock * tokens_per_s / 1e12,
            "perf/peak_tflops": float(self._peak_tflops),
            "perf/mfu": executed * tokens_per_s / 1e12 / self._peak_tflops,
            "perf/mfu_stock_flops": stock * tokens_per_s / 1e12 / self._peak_tflops,
            "train/lr": self.lr_schedulers().get_last_lr()[0],
        }
        self.log_dict(metrics, batch_size=batch["input_ids"].shape[0])
        self.perf_history.append({k: float(v) for k, v in metrics.items()})
        if not self.trainer.progress_bar_callback and step % (10 * self.hparams.log_every_n_steps) == 0:
            # no terminal, no progress bar: a line now and then for the log file
            rank_zero_info(f"step {step}/{self.trainer.max_steps}: loss {float(outputs['loss']):.3f}, "
                           f"{metrics['perf/tokens_per_s']:,.0f} tokens/s")
        self._reset_window()

    def on_validation_start(self) -> None:
        self._val_started = time.perf_counter()

    def on_validation_end(self) -> None:
        if self._window:  # validation time is not training throughput
            self._window["start"] += time.perf_counter() - self._val_started

    # ---- evaluation -----------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.objective(**batch)
        s = self.val_sums
        s["mlm_loss"].update(out.mlm_loss.float() * out.mlm_count)
        s["mlm_correct"].update(out.mlm_correct)
        s["mlm_count"].update(out.mlm_count)
        s["nsp_loss"].update(out.nsp_loss.float() * out.nsp_count)
        s["nsp_correct"].update(out.nsp_correct)
        s["nsp_count"].update(out.nsp_count)
        if self.most_frequent_token_id is not None:
            s["mlm_baseline_correct"].update((batch["labels"] == self.most_frequent_token_id).sum())

    def on_validation_epoch_end(self) -> None:
        v = {k: m.compute().float() for k, m in self.val_sums.items()}
        mlm_n, nsp_n = v["mlm_count"].clamp(min=1), v["nsp_count"].clamp(min=1)
        metrics = {"val/mlm_loss": v["mlm_loss"] / mlm_n, "val/mlm_accuracy": v["mlm_correct"] / mlm_n,
                   "val/nsp_loss": v["nsp_loss"] / nsp_n, "val/nsp_accuracy": v["nsp_correct"] / nsp_n,
                   "val/mlm_predictions": v["mlm_count"], "val/nsp_examples": v["nsp_count"]}
        metrics["val/loss"] = metrics["val/mlm_loss"] + metrics["val/nsp_loss"]
        if self.most_frequent_token_id is not None:
            metrics["val/mlm_baseline_accuracy"] = v["mlm_baseline_correct"] / mlm_n
        self.log_dict(metrics)
        for m in self.val_sums.values():
            m.reset()

    # ---- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.objective.named_parameters():
            if p.requires_grad:
                # BERT: no weight decay on LayerNorm weights and biases (all 1-d parameters)
                (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.learning_rate, betas=(hp.adam_beta1, hp.adam_beta2), eps=hp.adam_epsilon,
            fused=self._use_fused_adamw())
        scheduler = get_linear_schedule_with_warmup(optimizer, hp.warmup_steps, hp.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _loss_scaler(self) -> Any:
        """fp16 mixed precision's GradScaler; None for bf16 and fp32, which need none."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def _use_fused_adamw(self) -> bool:
        # Default: fused on CUDA (one kernel for all parameters), except under an fp16 GradScaler,
        # where Lightning must unscale the gradients before clipping them, which a fused step forbids.
        if self.hparams.fused_adamw is not None:
            return self.hparams.fused_adamw
        return self.device.type == "cuda" and self._loss_scaler() is None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # Lightning's mixed-precision plugin refuses to clip for any fused optimizer (found on an
        # H100: bf16-mixed + fused AdamW + max_grad_norm stopped at the first step). The refusal is
        # about fp16 loss scaling; with bf16 there is no scaler, the gradients (all-reduced under
        # DDP) are true values, so they are clipped here directly. Every other plugin (fp32,
        # fp16 with its scaler, FSDP's sharded gradients) keeps Lightning's own clipping.
        from lightning.pytorch.plugins.precision import MixedPrecision

        plugin = self.trainer.precision_plugin
        if not gradient_clip_val or type(plugin) is not MixedPrecision or self._loss_scaler() is not None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if str(gradient_clip_algorithm).lower().endswith("value"):
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    # ---- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bertops"] = {"fingerprint": self.hparams.fingerprint, "rng": _rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("bertops", {}).get("rng")


# ---- the fit function the pretrain stage calls ----------------------------------------------

def _most_frequent(ds: Any, column: str, exclude: set[int]) -> tuple[int, float]:
    """The most frequent value of an int (or list-of-int) column and its share."""
    import pyarrow.compute as pc

    col = ds.data.column(column)
    if hasattr(col.type, "value_type"):
        col = pc.list_flatten(col)
    counts = np.bincount(col.to_numpy())
    for i in exclude:
        if i < len(counts):
            counts[i] = 0
    best = int(counts.argmax())
    return best, float(counts[best] / max(counts.sum(), 1))


def _fingerprint(params: Params, dataset: Any, tokenizer: Any) -> str:
    p = params.pretrain.model_dump()
    blob = {"seed": params.seed, "model": params.model.model_dump(),
            "pretrain": {k: p[k] for k in _FINGERPRINT_KEYS}, "vocab_size": len(tokenizer),
            "data": [dataset[s]._fingerprint for s in ("train", "validation")]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_resume_checkpoint(ckpt_dir: Path, fingerprint: str) -> tuple[Path | None, int]:
    """(last.ckpt, its global step) if it was made by a run with the same settings and data; else
    (None, 0), and the stale checkpoints are removed so they cannot mix with the new run's."""
    last = ckpt_dir / "last.ckpt"
    if not last.exists():
        return None, 0
    try:
        saved = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
        if saved.get("bertops", {}).get("fingerprint") == fingerprint:
            return last, int(saved["global_step"])
        log.warning("%s was made with other settings or data: starting over", last)
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as e:  # unreadable: start over
        log.warning("cannot read %s (%s): starting over", last, e)
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:  # DDP ranks re-run this
        shutil.rmtree(ckpt_dir)
    return None, 0


class _AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in its own directory, then renames it into place,
    so a write cut short (SIGKILL after SIGTERM's grace period, a full disk) never replaces a good
    last.ckpt. Lightning's save is atomic only when $TMPDIR is on the checkpoint's filesystem: it
    writes a temporary file there and moves it, which across filesystems is a copy onto the target.
    """

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)  # unsupported: raises
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())  # the data reaches the disk before the rename does
            os.replace(tmp, path)  # atomic within a filesystem
        finally:
            tmp.unlink(missing_ok=True)


class _CheckpointOnSigterm(L.Callback):
    """Saves last.ckpt at the step reached when Lightning stops training for a SIGTERM.

    Lightning's handler only sets `trainer.received_sigterm`; the loops raise SIGTERMException at
    the end of the batch in progress (or of a validation batch) and call on_exception on every rank
    before tearing down. There the optimizer step, LR schedule and loop counters agree. Any other
    exception can come from the middle of a step, so nothing is saved for it.
    """

    def __init__(self, path: Path):
        self.path = path

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        step = trainer.global_step
        if trainer.fit_loop.epoch_loop.batch_progress.total.completed != step * trainer.accumulate_grad_batches:
            # Inside a gradient accumulation the loop counters are ahead of the data position
            # (PretrainingDataModule.state_dict): a checkpoint here would not resume exactly.
            rank_zero_warn(f"SIGTERM inside a gradient accumulation after step {step}: no checkpoint saved, "
                           f"{self.path} stays as it was")
            return
        trainer.save_checkpoint(str(self.path))  # every rank calls it, as Lightning requires
        rank_zero_info(f"SIGTERM: saved {self.path} at step {step}; re-running resumes from there")


@contextmanager
def _sigterm_exits_nonzero() -> Iterator[None]:
    """Lightning's SIGTERMException is a SystemExit without a code: uncaught, the process exits with
    status 0 and a stopped run looks like a finished stage. Re-raise it with 128 + SIGTERM = 143."""
    try:
        yield
    except SIGTERMException as e:
        raise SIGTERMException(128 + signal.SIGTERM) from e


def fit_pretraining(params: Params, data_dir: str | Path, tokenizer_dir: str | Path,
                    out_dir: str | Path, loggers: list | None = None, callbacks: list | None = None
                    ) -> dict:
    """Pretrain (or resume), evaluate on the validation split, save the model; returns metrics.

    Writes out_dir/checkpoints/last.ckpt (every `checkpoint_every_n_steps`, on SIGTERM, at the end),
    out_dir/model (BertForPreTraining.save_pretrained + tokenizer files) and out_dir/metrics.json.
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
    resume, started_step = find_resume_checkpoint(ckpt_dir, fingerprint) if p.resume else (None, 0)

    L.seed_everything(params.seed, workers=True, verbose=False)
    module = BertPretrainingModule(
        config.to_dict(), learning_rate=p.learning_rate, warmup_steps=p.warmup_steps,
        max_steps=p.max_steps, weight_decay=p.weight_decay, adam_beta1=p.adam_beta1,
        adam_beta2=p.adam_beta2, adam_epsilon=p.adam_epsilon, max_predictions=max_predictions,
        compile=p.compile, log_every_n_steps=p.log_every_n_steps, peak_tflops=p.peak_tflops,
        fingerprint=fingerprint)
    datamodule = PretrainingDataModule(
        dataset, tokenizer, p.batch_size, params.seed, p.max_steps, p.accumulate_grad_batches,
        mlm_probability=p.mlm_probability, mask_replace_prob=p.mask_replace_prob,
        random_replace_prob=p.random_replace_prob, whole_word_mask=p.whole_word_mask,
        pad_to_multiple_of=p.pad_to_multiple_of, pad_to_length=pad_to_length,
        num_workers=num_workers, eval_batch_size=p.eval_batch_size)
    checkpointing = ModelCheckpoint(dirpath=str(ckpt_dir), every_n_train_steps=p.checkpoint_every_n_steps,
                                    save_top_k=0, save_last=True, enable_version_counter=False)
    loggers = loggers if loggers is not None else [CSVLogger(str(out_dir), name="logs", version="")]
    common = {"accelerator": accelerator, "devices": p.devices, "num_nodes": p.num_nodes,
              "strategy": p.strategy, "precision": precision, "enable_progress_bar": sys.stderr.isatty(),
              "use_distributed_sampler": False}  # the batch sampler shards by rank itself
    eval_every = p.eval_every_n_steps if p.eval_every_n_steps and p.eval_every_n_steps < p.max_steps else 0
    trainer = L.Trainer(
        **common, max_steps=p.max_steps, max_epochs=-1,
        accumulate_grad_batches=p.accumulate_grad_batches, gradient_clip_val=p.max_grad_norm,
        gradient_clip_algorithm="norm", log_every_n_steps=p.log_every_n_steps,
        val_check_interval=eval_every * p.accumulate_grad_batches if eval_every else None,
        check_val_every_n_epoch=None if eval_every else 1,
        limit_val_batches=p.limit_val_batches if eval_every else 0, num_sanity_val_steps=0,
        callbacks=[checkpointing, _CheckpointOnSigterm(ckpt_dir / "last.ckpt"), *(callbacks or [])],
        plugins=[_AtomicCheckpointIO()], logger=loggers, default_root_dir=str(out_dir))

    # the MLM baseline is also logged by in-training validation, next to the model's accuracy
    module.most_frequent_token_id, _ = _most_frequent(dataset["train"], "input_ids",
                                                      set(tokenizer.all_special_ids))
    if resume is not None:
        rank_zero_info(f"resuming from {resume} at step {started_step}")
    # Lightning's CSV logger starts its file afresh; keep the rows of the interrupted run.
    csv_logs = [Path(lg.log_dir) / "metrics.csv" for lg in loggers if isinstance(lg, CSVLogger)]
    earlier = {path: _read_csv_rows(path, max_step=started_step) for path in csv_logs} if resume else {}
    t0 = time.perf_counter()
    with warnings.catch_warnings(), _sigterm_exits_nonzero():
        # Lightning cannot see that our sampler resumes mid-epoch by itself (see module docstring).
        warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    train_seconds = time.perf_counter() - t0
    for path, rows in earlier.items():
        if trainer.is_global_zero:
            _write_csv_rows(path, rows + _read_csv_rows(path))
    if checkpointing.last_model_path == "" or trainer.global_step % p.checkpoint_every_n_steps:
        trainer.save_checkpoint(str(ckpt_dir / "last.ckpt"))  # so a re-run resumes at the end

    evaluator = L.Trainer(**common, logger=False, limit_val_batches=p.eval_max_batches,
                          enable_model_summary=False, enable_checkpointing=False)
    with _sigterm_exits_nonzero():
        metrics = evaluate_pretraining(evaluator, module, datamodule, dataset)
    # Throughput: median over the logging windows, the first (warm-up, compilation) left out.
    windows = module.perf_history[1:] or module.perf_history
    perf = {k: float(np.median([w[f"perf/{k}"] for w in windows])) if windows else None
            for k in ("tokens_per_s", "mfu", "mfu_stock_flops")}
    metrics.update({"global_step": int(trainer.global_step), "resumed_from_step": started_step,
                    "train_seconds": round(train_seconds, 2), "train_tokens_per_s": perf["tokens_per_s"],
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


def evaluate_pretraining(trainer: L.Trainer, module: BertPretrainingModule,
                         datamodule: PretrainingDataModule, dataset: Any) -> dict:
    """Held-out MLM and NSP accuracy on the validation split (masked with fixed per-batch seeds,
    so every evaluation sees the same masks), next to trivial baselines: always predicting the
    most frequent non-special training token at every masked position, and always predicting the
    majority NSP label of the training split (module.most_frequent_token_id, set by fit_pretraining)."""
    nsp_majority, _ = _most_frequent(dataset["train"], "next_sentence_label", set())
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


def _read_csv_rows(path: Path, max_step: int | None = None) -> list[dict]:
    """Rows of a Lightning CSV log; with max_step, only those logged before that step."""
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if max_step is None or (r.get("step") and int(float(r["step"])) < max_step)]


def _write_csv_rows(path: Path, rows: list[dict]) -> None:
    import csv

    from bertops.io import atomic_path

    fields = sorted({k for r in rows for k in r})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
