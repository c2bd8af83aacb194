"""Checkpoint and resume machinery for Lightning training, independent of what is trained.

- `AtomicCheckpointIO`: a checkpoint write cut short never replaces a good last.ckpt;
- `CheckpointOnSigterm` + `sigterm_exits_nonzero`: SIGTERM (a cancel, a preempted worker, the
  orchestrator's death, see bertops.lifeline) saves last.ckpt at the step reached and the process
  exits with status 143;
- `fingerprint` / `find_resume_checkpoint`: a checkpoint is resumed only by a run with the same
  settings and data; `fetch_stored_checkpoint`: with a checkpoint store (any fsspec URL, e.g. an S3
  bucket; AtomicCheckpointIO(store=...) copies every checkpoint there), a run on another machine
  resumes from the furthest checkpoint of the same fingerprint; `resume_state` / `restore_rng_state`:
  what the module saves in the checkpoint so that the first resumed step draws the random numbers
  the uninterrupted run drew;
- `CsvLogInCheckpoint` / `restore_csv_log`: the Lightning CSV log travels inside the checkpoint, so
  a resumed run (even one resuming at the end, with nothing left to train) writes the whole curve
  although the log file itself is gone: `dvc repro` deletes a stage's outputs before running it.

Pretraining (bertops.train.pretrain) uses all of it; fine-tuning can use the same pieces.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import pickle
import random
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

STATE_KEY = "bertops"  # the checkpoint entry with what bertops itself adds


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in its own directory, then renames it into place,
    so a write cut short (SIGKILL after SIGTERM's grace period, a full disk) never replaces a good
    last.ckpt. Lightning's save is atomic only when $TMPDIR is on the checkpoint's filesystem: it
    writes a temporary file there and moves it, which across filesystems is a copy onto the target.

    With `store` (a directory URL fsspec opens: s3://bucket/prefix, or a plain path), each checkpoint
    saved is then copied there under its file name (`store_checkpoint`), so a run on another machine
    can resume from it (`fetch_stored_checkpoint`). Lightning calls this on global rank 0 only.
    """

    def __init__(self, store: str | None = None):
        super().__init__()
        self.store = store.rstrip("/") if store else None

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
        if self.store:
            store_checkpoint(path, self.store)


# ---- a checkpoint store shared by machines (S3 or any fsspec filesystem) -----------------------

def _store_fs(url: str):
    """(filesystem, path) for a store URL. fsspec (and s3fs for s3://) is imported here only: a plain
    local run never needs it. S3 settings come from the usual environment (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 for a non-AWS endpoint such as the stack's SeaweedFS)."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def store_checkpoint(path: Path, store: str) -> bool:
    """Copy the checkpoint file `path` to `store`/<its name>. An object store makes the new object
    visible only once complete; a local store gets a temporary name and a rename. A failed copy is a
    warning, not an error: training goes on with its local checkpoints (a transient outage must not
    stop a long run), but a run elsewhere would resume from an older one."""
    target = f"{store}/{path.name}"
    try:
        fs, remote = _store_fs(target)
        if "file" in fs.protocol or "local" in fs.protocol:
            fs.makedirs(fs._parent(remote), exist_ok=True)
            fs.put_file(str(path), f"{remote}.tmp")
            fs.mv(f"{remote}.tmp", remote)
        else:
            fs.put_file(str(path), remote)
    except Exception as e:  # noqa: BLE001  (any filesystem's error: the run keeps its local checkpoint)
        rank_zero_warn(f"checkpoint store: could not copy {path} to {target} ({type(e).__name__}: {e}); "
                       f"a run on another machine would resume from an older checkpoint")
        return False
    log.info("checkpoint store: %s -> %s", path, target)
    return True


# what reading a truncated or foreign checkpoint raises
UNREADABLE = (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError)


def _read_checkpoint(path: Path) -> tuple[str | None, int, list[dict]]:
    """(its fingerprint, global step, the CSV log rows it carries); raises one of UNREADABLE."""
    saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    state = saved.get(STATE_KEY, {})
    return state.get("fingerprint"), int(saved["global_step"]), state.get("csv_log") or []


def _checkpoint_step(path: Path, fingerprint: str) -> int | None:
    """The global step of checkpoint `path` if it carries `fingerprint`, else None."""
    try:
        found, step, _ = _read_checkpoint(path)
    except UNREADABLE:
        return None
    return step if found == fingerprint else None


def fetch_stored_checkpoint(ckpt_dir: Path, store: str, fingerprint: str) -> int | None:
    """Before a run: when `store` holds a last.ckpt of this `fingerprint` further along than
    ckpt_dir/last.ckpt (missing: a fresh clone, another machine), copy it there (with best.ckpt if
    the store has one) and return its step; else None, and ckpt_dir stays as it was.
    `store` should be keyed by the fingerprint (fit_pretraining: <url>/pretrain/<fingerprint>), so
    another run's checkpoints are never downloaded. An unreachable or refused store is an error
    (BertopsError naming it): training from scratch by mistake can cost days."""
    from bertops.errors import BertopsError

    tag = f"{os.getpid()}.{os.environ.get('RANK', os.environ.get('LOCAL_RANK', '0'))}"  # ranks fetch alone
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".last.ckpt.store-{tag}.tmp"
    try:
        fs, remote = _store_fs(f"{store}/last.ckpt")
        if not fs.exists(remote):
            return None
        fs.get_file(remote, str(tmp))
        step = _checkpoint_step(tmp, fingerprint)
        local = _checkpoint_step(ckpt_dir / "last.ckpt", fingerprint) if (ckpt_dir / "last.ckpt").exists() else None
        if step is None or (local is not None and local >= step):
            return None
        best = remote.rsplit("/", 1)[0] + "/best.ckpt"
        if fs.exists(best):
            best_tmp = ckpt_dir / f".best.ckpt.store-{tag}.tmp"
            fs.get_file(best, str(best_tmp))
            os.replace(best_tmp, ckpt_dir / "best.ckpt")
        os.replace(tmp, ckpt_dir / "last.ckpt")
    except BertopsError:
        raise
    except Exception as e:  # noqa: BLE001  (any filesystem's error, named for the user)
        raise BertopsError(f"checkpoint store {store}: cannot read it ({type(e).__name__}: {e}); fix the URL or "
                           f"credentials, or unset it to train without a shared checkpoint store") from e
    finally:
        tmp.unlink(missing_ok=True)
    rank_zero_info(f"checkpoint store: fetched {store}/last.ckpt at step {step} into {ckpt_dir}")
    return step


class CheckpointOnSigterm(L.Callback):
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
            # (e.g. PretrainingDataModule.state_dict): a checkpoint here would not resume exactly.
            rank_zero_warn(f"SIGTERM inside a gradient accumulation after step {step}: no checkpoint saved, "
                           f"{self.path} stays as it was")
            return
        trainer.save_checkpoint(str(self.path))  # every rank calls it, as Lightning requires
        rank_zero_info(f"SIGTERM: saved {self.path} at step {step}; re-running resumes from there")


@contextmanager
def sigterm_exits_nonzero() -> Iterator[None]:
    """Lightning's SIGTERMException is a SystemExit without a code: uncaught, the process exits with
    status 0 and a stopped run looks like a finished stage. Re-raise it with 128 + SIGTERM = 143."""
    try:
        yield
    except SIGTERMException as e:
        raise SIGTERMException(128 + signal.SIGTERM) from e


# ---- what a resumed run must match and restore ------------------------------------------------

def fingerprint(settings: dict) -> str:
    """A short digest of everything that changes what a resumed run would compute."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state() -> dict:
    """torch/CUDA/numpy/python RNG states, picklable into a checkpoint."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state((state["numpy"][0], np.asarray(state["numpy"][1], dtype=np.uint32),
                         *state["numpy"][2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_state(fingerprint: str) -> dict:
    """The checkpoint entry a module adds in on_save_checkpoint: `checkpoint[STATE_KEY] = resume_state(fp)`;
    its on_load_checkpoint keeps `rank_rng_state(checkpoint[STATE_KEY], rank, world_size)` for
    restore_rng_state just before the first resumed step (on_train_start).

    Under DDP every rank saves (Lightning calls on_save_checkpoint on all ranks; rank 0 alone writes
    the file), and each rank's dropout RNG has moved differently: "rng_by_rank" keeps all of them."""
    state = {"fingerprint": fingerprint, "rng": rng_state()}
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        by_rank: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(by_rank, state["rng"])
        state["rng_by_rank"] = by_rank
    return state


def rank_rng_state(state: dict, rank: int, world_size: int) -> dict | None:
    """The RNG state saved by `rank` (resume_state), or rank 0's when the world size changed."""
    by_rank = state.get("rng_by_rank") or []
    return by_rank[rank] if len(by_rank) == world_size else state.get("rng")


def find_resume_checkpoint(ckpt_dir: Path, fingerprint: str) -> tuple[Path | None, int, list[dict]]:
    """(last.ckpt, its global step, the CSV log rows it carries (CsvLogInCheckpoint)) if it was made
    by a run with the same settings and data; else (None, 0, []), and the stale checkpoints are
    removed so they cannot mix with the new run's."""
    last = ckpt_dir / "last.ckpt"
    if not last.exists():
        return None, 0, []
    try:
        found, step, csv_log = _read_checkpoint(last)
        if found == fingerprint:
            return last, step, csv_log
        log.warning("%s was made with other settings or data: starting over", last)
    except UNREADABLE as e:  # unreadable: start over
        log.warning("cannot read %s (%s): starting over", last, e)
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:  # DDP ranks re-run this
        shutil.rmtree(ckpt_dir)
    return None, 0, []


# ---- the training log, kept with the checkpoint ---------------------------------------------

def read_csv_rows(path: Path, max_step: int | None = None) -> list[dict]:
    """Rows of a Lightning CSV log; with max_step, only those logged before that step."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if max_step is None or (r.get("step") and int(float(r["step"])) < max_step)]


def write_csv_rows(path: Path, rows: list[dict]) -> None:
    from bertops.io import atomic_path

    fields = sorted({k for r in rows for k in r}) or ["step"]  # a header even when nothing was logged
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


class CsvLogInCheckpoint(L.Callback):
    """Puts the rows of the CSV log at `path` into every checkpoint (`checkpoint[STATE_KEY]["csv_log"]`).
    Lightning's CSV logger writes each row to the file as it is logged, so the file is current here."""

    def __init__(self, path: Path):
        self.path = path

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint.setdefault(STATE_KEY, {})["csv_log"] = read_csv_rows(self.path)


def logged_rows_before(csv_path: Path, saved_rows: list[dict], step: int) -> list[dict]:
    """The rows a run resuming at `step` keeps: those logged before that step, from the log file if
    it still has them, else from the checkpoint's copy `saved_rows` (find_resume_checkpoint; a run
    starting afresh has step 0, so it keeps none). A periodic checkpoint is saved before the row of
    its own last batch is logged; only the file has that row."""
    from_file = read_csv_rows(csv_path, max_step=step)
    from_checkpoint = [r for r in saved_rows if r.get("step") and int(float(r["step"])) < step]
    return from_file if len(from_file) >= len(from_checkpoint) else from_checkpoint


def restore_csv_log(path: Path, earlier: list[dict]) -> None:
    """After a fit: the log file = `earlier` (logged_rows_before) + what this run logged (Lightning
    starts the file afresh). Written even when nothing was logged, so the file always exists."""
    write_csv_rows(path, earlier + read_csv_rows(path))
