"""Pretraining under Lightning DDP: 2 processes on CPU (gloo), the real stage command.

`python -m bertops.stages pretrain -S pretrain.devices=2 -S pretrain.strategy=ddp` is what dvc.yaml
runs; Lightning's launcher re-runs that command for rank 1. A small driver (DRIVER) wraps it to
record, per rank, the example indices each batch sampler handed out and a digest of the parameters
at the end of training. Checked: every rank ends with the same parameters, the ranks read disjoint
examples, only rank 0 tracks (exactly one MLflow run) and writes the outputs, and a run whose
processes are all SIGKILLed resumes from last.ckpt to exactly the weights of the uninterrupted run
(each rank's dropout RNG is saved with the checkpoint).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.pretrain_helpers import TINY_MODEL, write_tiny_pretraining_inputs

pytestmark = pytest.mark.slow

MAX_STEPS, BATCH, WORLD = 12, 8, 2

DRIVER = '''
import hashlib, json, os, sys, time
import lightning as L
from bertops.train import pretrain as pretrain_mod, pretrain_data

OUT = os.environ["DDP_RECORD_DIR"]
DELAY = float(os.environ.get("DDP_STEP_DELAY", "0"))
_iter = pretrain_data.PretrainingBatchSampler.__iter__

def recording_iter(self):  # what this rank reads, batch by batch
    for b, keys in zip(range(self.start_batch, self.num_batches), _iter(self)):
        if self.shuffle:
            with open(os.path.join(OUT, f"samples-{self.rank}.jsonl"), "a") as f:
                f.write(json.dumps([b, self.world_size, [i for _, i in keys]]) + "\\n")
        yield keys

pretrain_data.PretrainingBatchSampler.__iter__ = recording_iter

class ParamDigest(L.Callback):
    def on_train_batch_end(self, *args):
        time.sleep(DELAY)  # slow enough to be killed between two checkpoints
    def on_train_end(self, trainer, module):
        h = hashlib.sha256()
        for name, p in sorted(module.model.state_dict().items()):
            h.update(name.encode() + p.detach().contiguous().numpy().tobytes())
        with open(os.path.join(OUT, f"params-{trainer.global_rank}.json"), "w") as f:
            json.dump({"world_size": trainer.world_size, "step": trainer.global_step, "digest": h.hexdigest()}, f)

_fit = pretrain_mod.fit_pretraining
def fit(*a, **kw):
    return _fit(*a, **{**kw, "callbacks": [*(kw.get("callbacks") or []), ParamDigest()]})
pretrain_mod.fit_pretraining = fit

from bertops.stages.__main__ import main
sys.exit(main())
'''


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_tiny_pretraining_inputs(tmp_path_factory.mktemp("ddp_inputs"), n_train=256, n_val=64)


def _start(workdir: Path, inputs, delay: float = 0.0) -> subprocess.Popen:
    """The pretrain stage on 2 CPU processes in `workdir` (its own params.yaml, MLflow store, records)."""
    data_dir, tok_dir = inputs
    (workdir / "rec").mkdir(parents=True, exist_ok=True)
    (workdir / "driver.py").write_text(DRIVER)
    (workdir / "params.yaml").write_text((REPO / "params.yaml").read_text())
    sets = {"model.preset": "tiny", "model.overrides": TINY_MODEL, "pretrain.data_dir": str(data_dir),
            "pretrain.tokenizer_dir": str(tok_dir), "pretrain.out_dir": str(workdir / "pretrain"),
            "pretrain.batch_size": BATCH, "pretrain.max_steps": MAX_STEPS, "pretrain.max_time": None,
            "pretrain.warmup_steps": 2,
            "pretrain.learning_rate": 3e-3, "pretrain.log_every_n_steps": 2,
            "pretrain.checkpoint_every_n_steps": 4, "pretrain.eval_every_n_steps": None,
            "pretrain.eval_max_batches": 2, "pretrain.peak_tflops": 0.05, "pretrain.num_workers": 0,
            "pretrain.accelerator": "cpu", "pretrain.devices": WORLD, "pretrain.strategy": "ddp"}
    args = [a for k, v in sets.items() for a in ("-S", f"{k}={json.dumps(v)}")]
    env = {**os.environ, "BERTOPS_TRACKING": "on", "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
           "BERTOPS_EXPERIMENT": "test-ddp", "DDP_RECORD_DIR": str(workdir / "rec"),
           "DDP_STEP_DELAY": str(delay), "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "BERTOPS_PARENT_RUN_ID"):
        env.pop(k, None)
    return subprocess.Popen([sys.executable, "driver.py", "pretrain", "--params", "params.yaml", *args],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _samples(workdir: Path, rank: int) -> dict[int, list[int]]:
    rows = [json.loads(line) for line in (workdir / "rec" / f"samples-{rank}.jsonl").read_text().splitlines()]
    assert all(world == WORLD for _, world, _ in rows)
    return {b: ix for b, _, ix in rows}


def _digests(workdir: Path) -> list[dict]:
    return [json.loads((workdir / "rec" / f"params-{r}.json").read_text()) for r in range(WORLD)]


def _runs(workdir: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _weights(workdir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(workdir / "pretrain" / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    """An uninterrupted 2-process run."""
    workdir = tmp_path_factory.mktemp("ddp_reference")
    _finish(_start(workdir, inputs))
    return workdir


def test_two_ranks_agree_read_disjoint_data_and_log_once(reference):
    digests = _digests(reference)
    assert [d["world_size"] for d in digests] == [WORLD, WORLD]
    assert [d["step"] for d in digests] == [MAX_STEPS, MAX_STEPS]
    assert digests[0]["digest"] == digests[1]["digest"]  # DDP kept the replicas identical

    per_rank = [_samples(reference, r) for r in range(WORLD)]
    assert [sorted(s) for s in per_rank] == [list(range(MAX_STEPS))] * WORLD
    assert all(len(ix) == BATCH for s in per_rank for ix in s.values())
    read = [{i for ix in s.values() for i in ix} for s in per_rank]
    # 12 global batches of 16 fit in the 256 examples' first epoch: no example is read twice
    assert not read[0] & read[1]
    assert len(read[0]) == len(read[1]) == MAX_STEPS * BATCH

    runs = _runs(reference)
    assert len(runs) == 1, [(r.info.run_name, r.info.status) for r in runs]  # rank 1 tracked nothing
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["bertops.stage"] == "pretrain"
    assert run.data.params["pretrain.devices"] == str(WORLD) and run.data.params["pretrain.strategy"] == "ddp"
    assert "heldout.mlm_accuracy" in run.data.metrics and "train/loss" in run.data.metrics

    out = reference / "pretrain"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == MAX_STEPS and metrics["resumed_from_step"] == 0
    # validation is sharded too, and its sums are reduced over both ranks
    assert metrics["nsp_examples"] == 2 * BATCH * WORLD  # eval_max_batches x batch x ranks
    assert json.loads((reference / "metrics" / "pretrain.json").read_text())
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / "plots" / "pretrain_curves.png").exists()


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(reference, inputs, tmp_path):
    import torch

    proc = _start(tmp_path, inputs, delay=0.4)
    last = tmp_path / "pretrain" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 180
    while not last.exists():
        if proc.poll() is not None:
            pytest.fail(f"training exited before its first checkpoint:\n{proc.stdout.read()[-3000:]}")
        assert time.time() < deadline, "no checkpoint within 180 s"
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # rank 0 and the rank-1 process it launched
    proc.communicate(timeout=60)
    saved = torch.load(last, map_location="cpu", weights_only=False)
    saved_step = saved["global_step"]
    assert 0 < saved_step < MAX_STEPS
    assert len(saved["bertops"]["rng_by_rank"]) == WORLD  # each rank's dropout RNG

    before = [_samples(tmp_path, r) for r in range(WORLD)]
    for r in range(WORLD):
        (tmp_path / "rec" / f"samples-{r}.jsonl").rename(tmp_path / "rec" / f"killed-samples-{r}.jsonl")
    _finish(_start(tmp_path, inputs))
    metrics = json.loads((tmp_path / "pretrain" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == saved_step and metrics["global_step"] == MAX_STEPS

    expected = [_samples(reference, r) for r in range(WORLD)]
    for r in range(WORLD):
        resumed = _samples(tmp_path, r)
        assert sorted(resumed) == list(range(saved_step, MAX_STEPS))  # each rank restarts at the saved step
        assert resumed == {b: expected[r][b] for b in resumed}
        assert before[r] == {b: expected[r][b] for b in before[r]}
    digests = _digests(tmp_path)
    assert digests[0]["digest"] == digests[1]["digest"] == _digests(reference)[0]["digest"]
    ref_w, run_w = _weights(reference), _weights(tmp_path)
    assert ref_w.keys() == run_w.keys()
    assert all(torch.equal(ref_w[k], run_w[k]) for k in ref_w)

    statuses = sorted(r.info.status for r in _runs(tmp_path))
    assert statuses == ["FINISHED", "KILLED"]  # the killed run's, marked by the rerun; one per run
