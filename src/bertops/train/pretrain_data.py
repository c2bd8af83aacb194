"""The resumable pretraining data: artifacts/pretraining_data -> dynamically masked NSP batches.

The training stream is one seeded, epoch-deterministic sequence of batches (PretrainingBatchSampler);
the data module saves how many batches were consumed (global_step x accumulate_grad_batches) and the
sampler restarts right after them. Each batch's masking seed is a function of (seed, batch number),
not of a running RNG, and the loaders use their own generators, so building them does not move the
global RNG (dropout of a resumed run stays that of the uninterrupted run).
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, Sampler

from bertops.errors import BertopsError, DataError
from bertops.text.masking import PretrainingCollator, SeededBatch

REQUIRED_COLUMNS = ("input_ids", "token_type_ids", "next_sentence_label")


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
    last.ckpt (checkpointing.CheckpointOnSigterm); the main process shuts its workers down as it exits."""
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


def most_frequent(ds: Any, column: str, exclude: set[int]) -> tuple[int, float]:
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
