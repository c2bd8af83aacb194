"""Pretraining with a checkpoint store (fit_pretraining(checkpoint_store=...), what the pretrain stage
passes from $BERTOPS_CHECKPOINT_STORE): a run stopped in one folder resumes in another folder that
has no checkpoint of its own, and a run with other settings does not take it. A plain directory is
the store here (fsspec opens it as it opens s3://); tests/integration/test_worker_route.py does
the same through S3 with a worker killed mid-stage and the rerun on another worker's clone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bertops.config import load_params
from tests.pretrain_helpers import stop_at_step, tiny_pretrain_overrides, write_tiny_pretraining_inputs

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {"max_steps": 12, "checkpoint_every_n_steps": 1000, "eval_every_n_steps": None,
            "log_every_n_steps": 1, "eval_max_batches": 2}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_tiny_pretraining_inputs(tmp_path_factory.mktemp("store_inputs"), n_train=256, n_val=64)


@pytest.mark.slow
def test_a_run_stopped_in_one_folder_resumes_in_another_through_the_store(inputs, tmp_path, monkeypatch):
    from bertops.train.pretrain import fit_pretraining

    monkeypatch.setenv("BERTOPS_TRACKING", "off")

    store = tmp_path / "store"

    def run(folder: str, callbacks=(), **settings):
        out = tmp_path / folder / "pretrain"
        params = load_params(REPO / "params.yaml", tiny_pretrain_overrides(*inputs, out, **{**SETTINGS, **settings}))
        return fit_pretraining(params, *inputs, out, callbacks=list(callbacks), checkpoint_store=str(store))

    with pytest.raises(SystemExit):
        run("machine-a", [stop_at_step(5)])
    [stored] = list((store / "pretrain").iterdir())  # one fingerprint
    assert torch.load(stored / "last.ckpt", weights_only=False)["global_step"] == 5

    moved = run("machine-b")["metrics"]  # a fresh folder: nothing of its own to resume
    assert moved["resumed_from_step"] == 5 and moved["global_step"] == 12, moved
    assert torch.load(stored / "last.ckpt", weights_only=False)["global_step"] == 12  # the store follows

    other = run("machine-c", learning_rate=1e-3)["metrics"]  # other settings: another key, from scratch
    assert other["resumed_from_step"] == 0 and other["global_step"] == 12
    assert len(list((store / "pretrain").iterdir())) == 2
