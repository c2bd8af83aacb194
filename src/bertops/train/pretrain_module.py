"""BertPretrainingModule: MLM + NSP pretraining of a stock BertForPreTraining, as a LightningModule.

Logged every `log_every_n_steps`: MLM loss/accuracy, NSP loss/accuracy, learning rate, tokens/s
and MFU. `perf/tokens_per_s` counts every position of the padded batches (padding included: the
work the device does, and what the FLOPs and MFU are computed from); `perf/nonpad_tokens_per_s`
counts only the real tokens (attention_mask 1), the rate at which corpus text is consumed.
FLOPs follow bertops.train.flops.FLOP_CONVENTION (performance.md): `perf/mfu` uses the FLOPs this
sparse-head step executes, `perf/mfu_stock_flops` and `perf/model_tflops` the stock "model FLOPs"
convention (MLM head at every position), against `perf/peak_tflops` (pretrain.peak_tflops when
given, e.g. the datasheet peak; else the measured matmul ceiling).
A checkpoint carries the run's fingerprint and RNG states (bertops.train.checkpointing); the RNG
is put back just before the first resumed step. It also carries the training time elapsed and the
tokens seen, so a run on a time budget (`max_time`, bertops.train.pretrain_schedule) resumes its
schedule and deadline where it stopped, and the tokens reached count the whole run.
`short_seq_length` cuts the training batches' NSP pairs to that many tokens for the first
`short_seq_fraction` of the budget (bertops.train.short_sequences); `mlm_probability_final` lowers
the masking rate over the budget (bertops.train.masking_schedule).
`dropout` (pretrain.dropout) sets the p of every dropout module for pretraining only: the model's
config keeps its own rates, so the saved config.json (what fine-tuning builds) is unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from bertops.train.checkpointing import STATE_KEY, rank_rng_state, restore_rng_state, resume_state
from bertops.train.flops import FLOP_CONVENTION, executed_flops_per_token, measure_matmul_tflops, model_flops_per_token
from bertops.train.masking_schedule import masking_rate, thin_masking
from bertops.train.pretrain_schedule import BudgetSchedule, TrainingClock, budget_progress, over_budget
from bertops.train.short_sequences import shorten_pairs


class BertPretrainingModule(L.LightningModule):
    """MLM + NSP pretraining of a stock BertForPreTraining (`self.model`).

    FLOP convention for the logged MFU: see bertops.train.flops.FLOP_CONVENTION.
    """

    def __init__(self, model_config: dict, learning_rate: float = 1e-4, warmup_steps: int = 0,
                 max_steps: int = 1000, weight_decay: float = 0.01, adam_beta1: float = 0.9,
                 adam_beta2: float = 0.999, adam_epsilon: float = 1e-6,
                 max_predictions: int | None = None, compile: bool = False, fused_adamw: bool | None = None,
                 log_every_n_steps: int = 10, peak_tflops: float | None = None,
                 fingerprint: str = "", flop_convention: str = FLOP_CONVENTION,
                 max_time: float | None = None, dropout: float | None = None,
                 short_seq_length: int | None = None, short_seq_fraction: float = 0.0,
                 decay_fraction: float = 1.0, mlm_probability: float = 0.15,
                 mlm_probability_final: float | None = None):
        super().__init__()
        from transformers import BertConfig

        from bertops.model.pretraining import BertPretrainingObjective, build_pretraining_model

        self.save_hyperparameters()
        self.config = BertConfig.from_dict(model_config)
        self.objective = BertPretrainingObjective(build_pretraining_model(self.config), max_predictions)
        if dropout is not None:  # pretraining only: config.json keeps the config's rates
            for m in self.objective.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = float(dropout)
        self.training_clock = TrainingClock()  # seconds of training, carried across resumes
        self.tokens_seen = 0  # real (non-padding) tokens of the training batches, whole run
        self.positions_seen = 0  # padded positions (the work done), whole run
        self.train_batches = 0  # training micro-batches so far, whole run: seeds the masking schedule's draw
        self._nonpad_pending: torch.Tensor | int = 0  # summed on the device, synced when logged
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
    def in_short_phase(self) -> bool:
        """Whether training batches are cut to short_seq_length now (the first short_seq_fraction
        of the budget, by the same progress as the lr schedule, so a resumed run agrees)."""
        h = self.hparams
        if not h.short_seq_length:
            return False
        progress = budget_progress(self.trainer.global_step, self.training_clock.elapsed(), h.max_steps,
                                   h.max_time)
        return progress < h.short_seq_fraction

    def masking_keep_prob(self) -> float:
        """The share of the collator's MLM selection kept now (decreasing masking; 1.0: off)."""
        h = self.hparams
        if h.mlm_probability_final is None:
            return 1.0
        progress = budget_progress(self.trainer.global_step, self.training_clock.elapsed(), h.max_steps,
                                   h.max_time)
        return masking_rate(progress, h.mlm_probability, h.mlm_probability_final) / h.mlm_probability

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # training batches only: in-training validation and the final evaluation stay at full length
        # and at the collator's masking rate
        if not self.trainer.training:
            return batch
        keep = self.masking_keep_prob()
        if keep < 1.0:  # one draw per micro-batch and rank, seeded by their index: a resumed run draws the same
            t = self.trainer
            generator = torch.Generator().manual_seed(self.train_batches * t.world_size + t.global_rank)
            batch = thin_masking(batch, keep, generator)
        self.train_batches += 1
        if self.in_short_phase():
            batch = shorten_pairs(batch, self.hparams.short_seq_length, self.config.pad_token_id or 0)
        return batch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.objective(**batch)
        self._predicted += out.predicted_positions
        # counted here, before the periodic checkpoint of this step is written (callbacks run first)
        self.positions_seen += batch["input_ids"].numel()
        if "attention_mask" in batch:
            self._nonpad_pending = self._nonpad_pending + batch["attention_mask"].sum()
        n = batch["input_ids"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=n)
        self.log("train/mlm_loss", out.mlm_loss, batch_size=n)
        self.log("train/nsp_loss", out.nsp_loss, batch_size=n)
        self.log("train/mlm_accuracy", out.mlm_correct / out.mlm_count.clamp(min=1), batch_size=n)
        self.log("train/nsp_accuracy", out.nsp_correct / out.nsp_count.clamp(min=1), batch_size=n)
        if self.hparams.max_predictions is not None:
            self.log("train/mlm_dropped", out.mlm_dropped.float(), batch_size=n)
        return out.loss

    def _deadline_reached(self) -> bool:
        """One decision for every rank: each rank has its own clock, and ranks that left the loop at
        different steps would hang the next all-reduce. Any rank past the deadline stops them all."""
        if self.hparams.max_time is None:
            return False
        return self.trainer.strategy.reduce_boolean_decision(
            over_budget(self.training_clock, self.hparams.max_time), all=False)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self._deadline_reached():
            # a run resumed at (or past) its deadline: train nothing, stop
            self.trainer.should_stop = True
            return -1
        return None

    def on_train_start(self) -> None:
        self.training_clock.start()
        if self._peak_tflops is None:
            dtype = torch.bfloat16 if "bf16" in str(self.trainer.precision) else torch.float32
            self._peak_tflops = measure_matmul_tflops(self.device, dtype)
        if self._rng_to_restore is not None:  # last thing before the first resumed step
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        self._reset_window()

    def _reset_window(self) -> None:
        self._window = {"start": time.perf_counter(), "tokens": 0.0, "predicted": 0.0, "seq_len": 0.0,
                        "batches": 0.0, "nonpad": 0}
        self._predicted = 0

    def on_train_batch_end(self, outputs: Any, batch: dict, batch_idx: int) -> None:
        w = self._window
        w["tokens"] += batch["input_ids"].numel()  # padded positions included
        if "attention_mask" in batch:  # summed on the device: no sync until the window is logged
            w["nonpad"] = w["nonpad"] + batch["attention_mask"].sum()
        w["seq_len"] += batch["input_ids"].shape[1]
        w["batches"] += 1
        w["predicted"] += self._predicted
        self._predicted = 0
        if self._deadline_reached():
            self.trainer.should_stop = True  # the deadline: this step was the last
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
            "perf/tokens_per_s": tokens_per_s * self.trainer.world_size,  # padding counted
            "perf/nonpad_tokens_per_s": float(w["nonpad"]) / elapsed * self.trainer.world_size,
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
            rank_zero_info(f"step {step}/{self.trainer.max_steps} ({self.training_clock.elapsed():.0f} s): "
                           f"loss {float(outputs['loss']):.3f}, {metrics['perf/tokens_per_s']:,.0f} tokens/s")
        self._reset_window()

    def on_train_end(self) -> None:
        self.training_clock.stop()  # the final evaluation and saving are not training time

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
        fused = self._use_fused_adamw()
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.learning_rate, betas=(hp.adam_beta1, hp.adam_beta2), eps=hp.adam_epsilon,
            # not fused: the multi-tensor step (torch's default on CUDA only; ~4x the per-parameter loop on CPU)
            fused=fused, foreach=None if fused else True)
        if hp.max_time is None and hp.decay_fraction == 1.0:  # the step schedule, as it always was
            scheduler = get_linear_schedule_with_warmup(optimizer, hp.warmup_steps, hp.max_steps)
        else:  # warm-up, (peak,) then linear decay to zero at the deadline (or max_steps, if sooner)
            scheduler = BudgetSchedule(optimizer, hp.warmup_steps, hp.max_steps, hp.max_time,
                                       self.training_clock, hp.decay_fraction)
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
    def tokens_reached(self) -> int:
        """Real tokens of all training batches so far (this run and the runs it resumed)."""
        self.tokens_seen += int(self._nonpad_pending)
        self._nonpad_pending = 0
        return self.tokens_seen

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint.setdefault(STATE_KEY, {}).update(resume_state(self.hparams.fingerprint))
        # a time-budget run resumes its schedule and deadline; tokens count the whole run
        checkpoint[STATE_KEY].update(train_seconds=self.training_clock.elapsed(),
                                     tokens_seen=self.tokens_reached(), positions_seen=self.positions_seen,
                                     train_batches=self.train_batches)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rank, world = (self._trainer.global_rank, self._trainer.world_size) if self._trainer else (0, 1)
        self._rng_to_restore = rank_rng_state(checkpoint.get(STATE_KEY, {}), rank, world)
        state = checkpoint.get(STATE_KEY, {})
        self.training_clock.restore(state.get("train_seconds", 0.0))
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.positions_seen = int(state.get("positions_seen", 0))
        self.train_batches = int(state.get("train_batches", 0))
