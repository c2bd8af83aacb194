"""The pretrain stage end to end on tiny inputs, and resuming a run that was really killed.

Inputs are a tiny hand-written WordPiece tokenizer and a tiny NSP dataset in the
artifacts/pretraining_data format (tests/pretrain_helpers.py); the model is 1-2 layers, hidden 32.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bertops.config import load_params
from tests.pretrain_helpers import stop_at_step, tiny_pretrain_overrides, write_tiny_pretraining_inputs

REPO = Path(__file__).resolve().parents[2]


def tiny_params(tmp: Path, data_dir: Path, tok_dir: Path, **pretrain):
    return load_params(REPO / "params.yaml", tiny_pretrain_overrides(data_dir, tok_dir, tmp / "pretrain", **pretrain))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_tiny_pretraining_inputs(tmp_path_factory.mktemp("pretrain_inputs"), n_train=512, n_val=128)


@pytest.mark.slow
def test_pretrain_stage_on_tiny_data(inputs, tmp_path, monkeypatch):
    from transformers import BertForPreTraining, pipeline

    from bertops.stages import pretrain as stage

    monkeypatch.setenv("BERTOPS_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BERTOPS_EXPERIMENT", "test-pretrain")
    params = tiny_params(tmp_path, *inputs, max_steps=60, checkpoint_every_n_steps=25,
                         eval_every_n_steps=30, limit_val_batches=2)
    result = stage.main(params)

    out = tmp_path / "pretrain"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {**result["metrics"], "info": metrics["info"]}
    assert metrics["global_step"] == 60 and metrics["resumed_from_step"] == 0
    assert metrics["nsp_examples"] == 128 and metrics["mlm_predictions"] > 0
    # the synthetic text is learnable: MLM must beat always predicting the most frequent token
    # ("the", about a quarter of the masked tokens) by a wide margin after 60 steps
    assert metrics["mlm_accuracy"] > metrics["baseline_mlm_most_frequent_token_accuracy"] + 0.05
    # NSP needs far longer than 60 steps at this size (its correctness is checked against stock
    # BERT in tests/unit/test_model.py); here: the baseline is the validation share of the
    # training split's majority label
    from datasets import load_from_disk

    dd = load_from_disk(str(inputs[0]))
    majority = max((0, 1), key=list(dd["train"]["next_sentence_label"]).count)
    share = list(dd["validation"]["next_sentence_label"]).count(majority) / 128
    assert metrics["baseline_nsp_majority_accuracy"] == pytest.approx(share)
    # an accuracy over the 128 validation examples: a whole number of them right
    assert metrics["nsp_accuracy"] * 128 == pytest.approx(round(metrics["nsp_accuracy"] * 128), abs=1e-3)
    assert metrics["nsp_loss"] > 0
    assert metrics["train_tokens_per_s"] > 0 and 0 < metrics["mfu"] < metrics["mfu_stock_flops"]
    # tokens/s counts padded positions; the tiny data has short examples, so real tokens are fewer
    assert 0 < metrics["train_nonpad_tokens_per_s"] < metrics["train_tokens_per_s"]
    assert "6*(L*(4h^2+2h*I)" in metrics["info"]["flop_convention"]

    # a standard checkpoint + tokenizer; the fill-mask pipeline loads it
    model = BertForPreTraining.from_pretrained(str(out / "model"))
    assert model.config.hidden_size == 32 and model.config.vocab_size == metrics["info"]["vocab_size"]
    assert len(pipeline("fill-mask", model=str(out / "model"), top_k=2)("the market [MASK] the team.")) == 2
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / "plots" / "pretrain_curves.png").exists()

    # logged to MLflow: curves from Lightning, held-out metrics, the FLOP convention
    import mlflow

    runs = mlflow.search_runs(experiment_names=["test-pretrain"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.metrics["heldout.mlm_accuracy"] == pytest.approx(metrics["mlm_accuracy"])
    assert "train/mlm_loss" in run.data.metrics and "perf/tokens_per_s" in run.data.metrics
    assert "val/nsp_accuracy" in run.data.metrics
    assert run.data.tags["bertops.flop_convention"].startswith("train FLOPs/token")
    # MLM learned, so no warning names it (NSP may still be at its baseline after 60 steps)
    assert not any(w.startswith("held-out MLM") for w in metrics["warnings"])

    # re-running with the same settings resumes at the end: nothing retrained, same model
    before = (out / "model" / "model.safetensors").read_bytes()
    again = stage.main(params)
    assert again["metrics"]["resumed_from_step"] == 60
    assert (out / "model" / "model.safetensors").read_bytes() == before


@pytest.mark.slow
def test_an_encoder_that_learned_nothing_is_flagged_in_its_metrics_and_on_its_run(inputs, tmp_path, monkeypatch):
    """A run that ends on the MLM baseline (here: a learning rate too small to move the weights) says
    so in metrics.json, the log and a tag on its MLflow run, and still saves its model."""
    import mlflow

    from bertops.stages import pretrain as stage

    monkeypatch.setenv("BERTOPS_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BERTOPS_EXPERIMENT", "test-pretrain-nothing")
    params = tiny_params(tmp_path, *inputs, max_steps=3, learning_rate=1e-12, eval_every_n_steps=None,
                         eval_max_batches=2)
    with pytest.warns(UserWarning, match="held-out MLM accuracy .* is not above always predicting"):
        result = stage.main(params)
    metrics = json.loads((tmp_path / "pretrain" / "metrics.json").read_text())
    assert metrics["mlm_accuracy"] < metrics["baseline_mlm_most_frequent_token_accuracy"]
    assert metrics["warnings"] == result["metrics"]["warnings"] and metrics["warnings"][0].startswith("held-out MLM")
    (run,) = mlflow.search_runs(experiment_names=["test-pretrain-nothing"], output_format="list")
    assert run.data.tags["bertops.pretrain_warnings"].startswith(metrics["warnings"][0])
    assert (tmp_path / "pretrain" / "model" / "model.safetensors").exists()


def _declared_outputs(stage: str, out_dir: str) -> dict[Path, bool]:
    """The outputs dvc.yaml declares for `stage` (outs, metrics, plots) under the stage's out_dir in
    params.yaml, relative to it: {path: persist}. (The headline metrics/<stage>.json outside it are
    written by `bertops stage` from out_dir/metrics.json.)"""
    import yaml

    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    declared = {}
    for kind in ("outs", "metrics", "plots"):
        for entry in spec.get(kind, []):
            path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            if Path(path).is_relative_to(out_dir):
                declared[Path(path).relative_to(out_dir)] = bool((opts or {}).get("persist"))
    return declared


@pytest.mark.slow
def test_a_rerun_resuming_at_max_steps_writes_every_declared_output(inputs, tmp_path, monkeypatch):
    """`dvc repro` deletes a stage's outputs (all but persisted ones: the checkpoints) before running it.
    A re-run that resumes from a checkpoint already at max_steps trains nothing; it must still write
    every output dvc.yaml declares, with the whole training curve (it wrote no log and no plot, and
    DVC failed with "output 'artifacts/pretrain/plots' does not exist" on every retry)."""
    import csv
    import shutil

    from bertops.stages import pretrain as stage

    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    params = tiny_params(tmp_path, *inputs, max_steps=10, checkpoint_every_n_steps=5, eval_every_n_steps=None,
                         log_every_n_steps=2, eval_max_batches=1)
    stage.main(params)
    out = tmp_path / "pretrain"
    declared = _declared_outputs("pretrain", load_params(REPO / "params.yaml").pretrain.out_dir)
    assert {Path("plots"), Path("logs/metrics.csv"), Path("metrics.json")} <= set(declared)
    # not a DVC output: dvc repro never deletes the resume point (and the run cache stays usable)
    assert Path("checkpoints") not in declared

    def curve():
        with open(out / "logs" / "metrics.csv", newline="") as f:
            return [(r["step"], r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]

    first = curve()
    assert [int(s) for s, _ in first] == [1, 3, 5, 7, 9]
    for rel, persist in declared.items():  # what dvc repro does before running the stage
        if not persist:
            shutil.rmtree(out / rel) if (out / rel).is_dir() else (out / rel).unlink()

    again = stage.main(params)
    assert again["metrics"]["resumed_from_step"] == 10 and again["metrics"]["global_step"] == 10
    for rel in declared:
        path = out / rel
        assert path.exists() and (not path.is_dir() or any(path.iterdir())), f"{rel} was not written"
    assert curve() == first  # the whole curve, from the checkpoint
    assert (out / "plots" / "pretrain_curves.png").stat().st_size > 10_000  # curves, not an empty figure


RECORDER = '''
import hashlib, json, time
import lightning as L

class BatchRecorder(L.Callback):
    """Writes (global step, digest of the masked batch) for every trained batch."""
    def __init__(self, path, delay=0.0):
        self.path, self.delay = path, delay
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        digest = hashlib.sha1(batch["input_ids"].numpy().tobytes() + batch["labels"].numpy().tobytes()).hexdigest()
        with open(self.path, "a") as f:
            f.write(json.dumps([trainer.global_step, digest]) + "\\n")
    def on_train_batch_end(self, *args):
        time.sleep(self.delay)  # slow enough to be killed between two checkpoints
'''


def _records(path: Path) -> dict[int, str]:
    return {step: digest for step, digest in map(json.loads, path.read_text().splitlines())}


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _reference_run(tmp_path: Path, inputs, monkeypatch, settings: dict):
    """The uninterrupted run to compare with: (BatchRecorder class, its dir, step -> batch digest).
    The recorder module is importable here and in the subprocess (same code both sides)."""
    from bertops.train.pretrain import fit_pretraining

    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    (tmp_path / "batch_recorder.py").write_text(RECORDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    from batch_recorder import BatchRecorder

    ref_dir = tmp_path / "ref"
    fit_pretraining(tiny_params(ref_dir, *inputs, **settings), *inputs, ref_dir / "pretrain",
                    callbacks=[BatchRecorder(str(ref_dir / "batches.jsonl"))])
    reference = _records(ref_dir / "batches.jsonl")
    assert sorted(reference) == list(range(settings["max_steps"]))
    return BatchRecorder, ref_dir, reference


def _assert_same_weights(ref_dir: Path, out: Path) -> None:
    ref_w, run_w = _weights(ref_dir / "pretrain" / "model"), _weights(out / "model")
    assert ref_w.keys() == run_w.keys()
    for name in ref_w:
        assert torch.allclose(ref_w[name], run_w[name], rtol=0, atol=1e-6), name


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(inputs, tmp_path, monkeypatch):
    """SIGKILL a real training process after a checkpoint, restart, and compare with a run that was
    never interrupted. Asserted: the restart begins at the checkpoint's global step (not 0) and ends
    at max_steps; every batch it trains on (data position *and* masking) is the batch the
    uninterrupted run trained on at that step; and the final weights match, which also requires
    the optimizer, LR schedule and dropout RNG to have been restored."""
    from bertops.train.pretrain import fit_pretraining

    settings = {"max_steps": 24, "checkpoint_every_n_steps": 4, "eval_every_n_steps": 8,
                "limit_val_batches": 1, "log_every_n_steps": 2, "eval_max_batches": 2}
    # 1. the reference: never interrupted
    Recorder, ref_dir, reference = _reference_run(tmp_path, inputs, monkeypatch, settings)

    # 2. the same run in a subprocess, killed with SIGKILL once a checkpoint exists
    run_dir = tmp_path / "run"
    params = tiny_params(run_dir, *inputs, **settings)
    out, log = run_dir / "pretrain", run_dir / "batches.jsonl"
    proc = _start_training(params, inputs, out, log, recorder_dir=tmp_path)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists():
        assert proc.poll() is None, f"training exited before its first checkpoint: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved_step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    killed_at = max(_records(log))  # the last step it started
    assert 0 < saved_step <= killed_at + 1 < 24, (saved_step, killed_at)

    # 3. restart: resumes from last.ckpt
    log.rename(run_dir / "batches_before_kill.jsonl")
    result = fit_pretraining(params, *inputs, out, callbacks=[Recorder(str(log))])
    resumed = _records(log)
    assert result["metrics"]["resumed_from_step"] == saved_step
    assert result["metrics"]["global_step"] == 24
    assert sorted(resumed) == list(range(saved_step, 24))  # starts at the saved step, not at 0
    assert resumed == {s: reference[s] for s in resumed}  # same data position and masks
    before_kill = _records(run_dir / "batches_before_kill.jsonl")
    assert before_kill == {s: reference[s] for s in before_kill}

    # the CSV log keeps the curve from before the kill
    import csv

    with open(out / "logs" / "metrics.csv", newline="") as f:
        logged = sorted({int(float(r["step"])) for r in csv.DictReader(f) if r.get("train/loss")})
    assert logged[0] < saved_step and logged[-1] >= 20

    _assert_same_weights(ref_dir, out)


@pytest.mark.slow
def test_time_budget_stops_at_the_deadline_and_a_resumed_run_keeps_its_schedule(inputs, tmp_path, monkeypatch):
    """pretrain.max_time on a fake clock (each training step "takes" 1 s, no sleeping): training
    stops at the deadline long before max_steps, with the learning rate at zero there, and the
    batches are cut to short_seq_length for the first half of the budget only, and masked less and less
    (mlm_probability_final). A run stopped
    (SIGTERM) at step 5 and re-run resumes the elapsed time from its checkpoint: it stops at the same
    step, with the same tokens, phases and weights as the uninterrupted run (a restarted clock or
    schedule would train past the deadline, with other rates or too long at the short length)."""
    import csv

    import lightning as L

    from bertops.train import pretrain_schedule
    from bertops.train.pretrain import fit_pretraining

    fake = {"now": 0.0}
    monkeypatch.setattr(pretrain_schedule, "_now", lambda: fake["now"])
    monkeypatch.setenv("BERTOPS_TRACKING", "off")

    class Tick(L.Callback):  # runs before the module's own on_train_batch_end (the deadline check)
        def on_train_batch_end(self, *args):
            fake["now"] += 1.0

    widths: dict[int, int] = {}
    masked: dict[int, tuple[int, int]] = {}

    class Widths(L.Callback):  # the batch as the step gets it (after on_after_batch_transfer)
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            widths[trainer.global_step] = batch["input_ids"].shape[1]
            masked[trainer.global_step] = (int((batch["labels"] != -100).sum()), int(batch["attention_mask"].sum()))

    settings = {"max_steps": 500, "max_time": "0:12", "warmup_steps": 2, "checkpoint_every_n_steps": 1000,
                "eval_every_n_steps": None, "log_every_n_steps": 1, "eval_max_batches": 2,
                "short_seq_length": 16, "short_seq_fraction": 0.5,
                "mlm_probability": 0.45, "mlm_probability_final": 0.05}
    ref_dir = tmp_path / "ref"
    ref = fit_pretraining(tiny_params(ref_dir, *inputs, **settings), *inputs, ref_dir / "pretrain",
                          callbacks=[Tick(), Widths()])["metrics"]
    assert ref["global_step"] == 12 and ref["max_time"] == 12.0
    # 6 s of 12 at 16 tokens, then the data's own lengths (up to 48, padded to a multiple of 8)
    assert [widths[s] for s in range(6)] == [16] * 6 and all(widths[s] > 16 for s in range(6, 12))
    ref_widths, ref_masked = dict(widths), dict(masked)
    # decreasing masking: 45% -> 5% of the real tokens over the 12 s (the collator's 45%, thinned)
    share = lambda steps: sum(masked[s][0] for s in steps) / sum(masked[s][1] for s in steps)  # noqa: E731
    assert share(range(3)) > 0.3 and share(range(9, 12)) < 0.2
    assert ref["train_seconds_total"] == pytest.approx(12.0)
    assert ref["train_tokens"] > 0 and ref["train_positions"] >= ref["train_tokens"]
    with open(ref_dir / "pretrain" / "logs" / "metrics.csv", newline="") as f:
        lr = {int(float(r["step"])): float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")}
    # Lightning logs step s's row after the scheduler stepped with the time at the end of step s:
    # linear in the elapsed seconds, zero at the 12 s deadline (the rate a 13th step would have had)
    assert sorted(lr) == list(range(12))
    assert [lr[s] for s in range(1, 12)] == pytest.approx([3e-3 * (1 - s / 12) for s in range(1, 12)])

    run_dir = tmp_path / "run"
    params = tiny_params(run_dir, *inputs, **settings)
    with pytest.raises(SystemExit):
        fit_pretraining(params, *inputs, run_dir / "pretrain", callbacks=[Tick(), stop_at_step(5)])
    saved = torch.load(run_dir / "pretrain" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 5 and saved["bertops"]["train_seconds"] == pytest.approx(5.0)
    fake["now"] += 1000.0  # another process, another raw clock reading: only the elapsed time counts
    widths.clear()
    masked.clear()
    result = fit_pretraining(params, *inputs, run_dir / "pretrain", callbacks=[Tick(), Widths()])["metrics"]
    assert result["resumed_from_step"] == 5 and result["global_step"] == 12
    assert widths == {s: ref_widths[s] for s in range(5, 12)}
    assert masked == {s: ref_masked[s] for s in range(5, 12)}  # the same thinning draws after the resume
    assert result["train_seconds_total"] == pytest.approx(12.0)
    assert result["train_tokens"] == ref["train_tokens"]
    _assert_same_weights(ref_dir, run_dir / "pretrain")

    # re-run at the deadline: nothing is trained, the same model
    again = fit_pretraining(params, *inputs, run_dir / "pretrain", callbacks=[Tick()])["metrics"]
    assert again["resumed_from_step"] == 12 and again["global_step"] == 12
    _assert_same_weights(ref_dir, run_dir / "pretrain")


@pytest.mark.slow
def test_keep_best_saves_the_best_validated_model(inputs, tmp_path, monkeypatch):
    """pretrain.keep_best: the saved model is the in-training validation's lowest val/mlm_loss."""
    import csv

    from bertops.train.pretrain import fit_pretraining

    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    params = tiny_params(tmp_path, *inputs, max_steps=20, eval_every_n_steps=5, limit_val_batches=2,
                         checkpoint_every_n_steps=1000, eval_max_batches=2, keep_best=True)
    result = fit_pretraining(params, *inputs, tmp_path / "pretrain")
    with open(tmp_path / "pretrain" / "logs" / "metrics.csv", newline="") as f:
        val = {int(float(r["step"])) + 1: float(r["val/mlm_loss"]) for r in csv.DictReader(f) if r.get("val/mlm_loss")}
    assert sorted(val) == [5, 10, 15, 20]
    assert result["metrics"]["best_step"] == min(val, key=val.get)
    best = torch.load(tmp_path / "pretrain" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    saved = _weights(tmp_path / "pretrain" / "model")
    for name, value in best["state_dict"].items():
        if name.startswith("objective.model.") and name.removeprefix("objective.model.") in saved:
            assert torch.equal(saved[name.removeprefix("objective.model.")], value), name


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_at_the_step_reached(inputs, tmp_path, monkeypatch):
    """SIGTERM (a Prefect cancel, a preempted spot worker, `kill PID`) a real training process long
    before its first periodic checkpoint, sent to its whole process group, DataLoader workers
    included. Asserted: it writes last.ckpt at the step it reached and exits with status 143 (not
    0: a stopped run is not a finished stage); a re-run resumes from exactly that step, trains the
    batches the uninterrupted run trained, and ends with its weights (so the checkpoint taken on
    SIGTERM is as complete as a periodic one)."""
    from bertops.train.pretrain import fit_pretraining

    # no periodic checkpoint before max_steps: last.ckpt can only come from the SIGTERM
    settings = {"max_steps": 24, "checkpoint_every_n_steps": 1000, "eval_every_n_steps": 8,
                "limit_val_batches": 1, "log_every_n_steps": 2, "eval_max_batches": 2}
    Recorder, ref_dir, reference = _reference_run(tmp_path, inputs, monkeypatch, settings)

    run_dir = tmp_path / "run"
    out, log = run_dir / "pretrain", run_dir / "batches.jsonl"
    proc = _start_training(tiny_params(run_dir, *inputs, **settings, num_workers=2), inputs, out, log,
                           recorder_dir=tmp_path)
    deadline = time.time() + 240
    while not (log.exists() and max(_records(log), default=-1) >= 5):  # well into training
        assert proc.poll() is None, f"training exited early: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "training did not reach step 5 within 240 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the trainer and its DataLoader workers
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    last = out / "checkpoints" / "last.ckpt"
    assert last.exists() and not list(last.parent.glob(".*.tmp")), stderr[-3000:]
    saved_step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    killed_at = max(_records(log))  # the last step it started: Lightning finishes that one
    assert 5 < saved_step == killed_at + 1 < 24, (saved_step, killed_at)
    assert f"SIGTERM: saved {last} at step {saved_step}" in stderr

    log.rename(run_dir / "batches_before_sigterm.jsonl")
    params = tiny_params(run_dir, *inputs, **settings)  # num_workers is not part of the fingerprint
    result = fit_pretraining(params, *inputs, out, callbacks=[Recorder(str(log))])
    assert result["metrics"]["resumed_from_step"] == saved_step
    assert result["metrics"]["global_step"] == 24
    resumed = _records(log)
    assert sorted(resumed) == list(range(saved_step, 24))
    assert resumed == {s: reference[s] for s in resumed}
    _assert_same_weights(ref_dir, out)


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("write cut short")


def test_a_failed_checkpoint_write_leaves_last_ckpt_as_it_was(tmp_path):
    from bertops.train.checkpointing import AtomicCheckpointIO

    io, last = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 7, "weights": torch.ones(1000)}, last)
    with pytest.raises(RuntimeError, match="write cut short"):  # fails after part of it is written
        io.save_checkpoint({"global_step": 9, "weights": torch.zeros(1000), "x": _Unpicklable()}, last)
    assert torch.load(last, weights_only=False)["global_step"] == 7
    assert [f.name for f in last.parent.iterdir()] == ["last.ckpt"]


def _start_training(params, inputs, out: Path, log: Path, recorder_dir: Path) -> subprocess.Popen:
    """fit_pretraining in a fresh process, 0.3 s per batch (BatchRecorder from recorder_dir)."""
    script = textwrap.dedent(f"""
        from batch_recorder import BatchRecorder
        from bertops.config import load_params
        from bertops.train.pretrain import fit_pretraining
        params = load_params({str(REPO / 'params.yaml')!r}, {_overrides(params)!r})
        fit_pretraining(params, {str(inputs[0])!r}, {str(inputs[1])!r}, {str(out)!r},
                        callbacks=[BatchRecorder({str(log)!r}, delay=0.3)])
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(recorder_dir), str(REPO / "src")])}
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _overrides(params) -> dict:
    p = params.pretrain.model_dump()
    return {"model.preset": params.model.preset, "model.overrides": params.model.overrides,
            **{f"pretrain.{k}": v for k, v in p.items()}}
