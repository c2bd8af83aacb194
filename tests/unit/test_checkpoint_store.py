"""The checkpoint store (bertops.train.checkpointing): every checkpoint copied to a shared directory
URL, fetched by a run elsewhere only when it is of the same fingerprint and further along.
A plain directory stands in for S3 here (fsspec opens both the same way); the S3 round trip against
the stack's SeaweedFS is in tests/integration/test_stack.py, a whole killed-and-moved pretraining in
tests/integration/test_worker_route.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bertops.errors import BertopsError
from bertops.train.checkpointing import STATE_KEY, AtomicCheckpointIO, fetch_stored_checkpoint, store_checkpoint


def _ckpt(step: int, fp: str = "fp-a") -> dict:
    return {"global_step": step, "state_dict": {"w": torch.full((2,), float(step))}, STATE_KEY: {"fingerprint": fp}}


def _step(path: Path) -> int:
    return torch.load(path, weights_only=False)["global_step"]


def test_every_saved_checkpoint_is_copied_to_the_store_and_another_folder_resumes_from_it(tmp_path):
    store = str(tmp_path / "store" / "pretrain" / "fp-a")
    io = AtomicCheckpointIO(store=store)
    io.save_checkpoint(_ckpt(10), tmp_path / "machine-a" / "last.ckpt")
    io.save_checkpoint(_ckpt(20), tmp_path / "machine-a" / "last.ckpt")
    io.save_checkpoint(_ckpt(15), tmp_path / "machine-a" / "best.ckpt")
    assert _step(Path(store) / "last.ckpt") == 20 and _step(Path(store) / "best.ckpt") == 15
    assert sorted(p.name for p in Path(store).iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary left

    other = tmp_path / "machine-b" / "checkpoints"  # a fresh clone: nothing local
    assert fetch_stored_checkpoint(other, store, "fp-a") == 20
    assert _step(other / "last.ckpt") == 20 and _step(other / "best.ckpt") == 15
    assert sorted(p.name for p in other.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_local_checkpoint_further_along_or_another_fingerprint_is_kept(tmp_path):
    store = tmp_path / "store"
    AtomicCheckpointIO(store=str(store)).save_checkpoint(_ckpt(20), tmp_path / "a" / "last.ckpt")
    ahead = tmp_path / "b"
    AtomicCheckpointIO().save_checkpoint(_ckpt(30), ahead / "last.ckpt")
    assert fetch_stored_checkpoint(ahead, str(store), "fp-a") is None
    assert _step(ahead / "last.ckpt") == 30

    behind = tmp_path / "c"
    AtomicCheckpointIO().save_checkpoint(_ckpt(5), behind / "last.ckpt")
    assert fetch_stored_checkpoint(behind, str(store), "fp-a") == 20
    assert _step(behind / "last.ckpt") == 20

    stranger = tmp_path / "d"  # a run with other settings or data never takes it
    assert fetch_stored_checkpoint(stranger, str(store), "fp-other") is None
    assert not (stranger / "last.ckpt").exists()
    assert fetch_stored_checkpoint(tmp_path / "e", str(tmp_path / "empty-store"), "fp-a") is None


def test_an_unreadable_store_stops_the_run_and_a_failed_copy_only_warns(tmp_path):
    with pytest.raises(BertopsError, match="checkpoint store nosuchprotocol://bucket/x: cannot read it"):
        fetch_stored_checkpoint(tmp_path / "ckpt", "nosuchprotocol://bucket/x", "fp-a")
    path = tmp_path / "ckpt" / "last.ckpt"
    with pytest.warns(UserWarning, match="could not copy"):
        AtomicCheckpointIO(store="nosuchprotocol://bucket/x").save_checkpoint(_ckpt(3), path)
    assert _step(path) == 3  # the local checkpoint is there all the same
    assert store_checkpoint(path, "nosuchprotocol://bucket/x") is False
