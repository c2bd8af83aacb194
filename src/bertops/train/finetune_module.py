"""The Lightning side of multi-task fine-tuning: the LightningModule and the keep-best callback.

bertops.train.finetune builds them (`_fit`); they are plain classes so that they can be imported,
subclassed and tested on their own.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

if TYPE_CHECKING:
    from bertops.config import FinetuneParams
    from bertops.train.finetune import EvalSet

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm", "gamma", "layer_weights")


def layer_lr_scale(name: str, num_layers: int, decay: float | None) -> float:
    """Layer-wise learning-rate decay (ELECTRA, Clark et al. 2020) for an encoder parameter name
    (as in MultiTaskModel: "encoder.embeddings...", "encoder.encoder.layer.<i>...",
    "encoder.pooler..."): embeddings get decay**L, layer i gets decay**(L-1-i), the rest (the
    pooler) 1. decay None or 1.0: 1 everywhere."""
    if decay is None or decay == 1.0:
        return 1.0
    if ".embeddings." in name:
        return decay ** num_layers
    m = re.search(r"\.layer\.(\d+)\.", name)
    return decay ** (num_layers - 1 - int(m.group(1))) if m else 1.0


def param_groups(model, ft: FinetuneParams) -> list[dict]:
    """AdamW parameter groups of a MultiTaskModel: encoder parameters at finetune.learning_rate
    (times `layer_lr_scale` when finetune.layer_lr_decay is set), heads and the layer mix at
    head_learning_rate; no weight decay on biases and norms. Frozen parameters are left out.
    finetune.mode adapters: every task's LoRA adapter and head at finetune.adapters.learning_rate
    (one rate for everything that trains, as in peft's examples; at full fine-tuning's
    head_learning_rate code entities' token head stayed on the `O` prior: F1 0)."""
    from bertops.train.adapters import trains as adapter_trains

    n_layers = model.encoder.config.num_hidden_layers
    adapters = ft.mode == "adapters"
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if not (adapter_trains(name, p) if adapters else p.requires_grad):
            continue
        if adapters:
            lr = ft.adapters.learning_rate
        elif name.startswith("encoder."):
            lr = ft.learning_rate * layer_lr_scale(name, n_layers, ft.layer_lr_decay)
        else:
            lr = ft.head_learning_rate
        wd = 0.0 if any(k in name for k in NO_DECAY) else ft.weight_decay
        groups.setdefault((lr, wd), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


class MultiTaskModule(L.LightningModule):
    """Trains a MultiTaskModel on single-task batches ({"task": name, input tensors, labels}).

    Validation runs on every task's selection examples (`eval_sets`); at the end of each
    validation epoch the task metrics and their mean ("score") are appended to `history`.
    """

    def __init__(self, model, ft: FinetuneParams, eval_sets: dict[str, EvalSet]):
        super().__init__()
        self.model = model
        self.ft = ft
        self.eval_sets = eval_sets
        self.history: list[dict] = []
        self._val_logits: dict[str, list] = {}

    def training_step(self, batch, batch_idx):
        task = batch.pop("task")
        spec = self.model.tasks[task]
        logits = self.model(task, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        loss = self.model.loss(spec, logits, batch)
        n = len(batch["input_ids"])
        self.log(f"train/{task}/loss", loss, on_step=True, on_epoch=False, batch_size=n)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        return loss * spec.loss_weight

    def on_validation_epoch_start(self):
        self._val_logits = {t: [] for t in self.eval_sets}

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        task = batch.pop("task")
        logits = self.model(task, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        lengths = batch["attention_mask"].sum(1).tolist()
        for j, n in enumerate(lengths):
            lg = logits[j].float().cpu()
            self._val_logits[task].append(lg if lg.dim() == 1 else lg[:n])

    def on_validation_epoch_end(self):
        # a trainer.validate() after fit (see finetune._fit) scores the epoch that max_steps cut short
        after_fit = self.trainer.state.fn == "validate"
        row: dict[str, Any] = {"epoch": self.current_epoch - int(after_fit), "step": int(self.global_step)}
        scores = []
        for task, es in self.eval_sets.items():
            m = es.score(self.model, self._val_logits[task])
            for k, v in m.items():
                self.log(f"val/{task}/{k}", v, prog_bar=False)
            row[task] = m
            scores.append(m["score"])
        row["score"] = sum(scores) / len(scores)
        self.log("val/score", row["score"], prog_bar=True)
        self.history.append(row)

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        ft = self.ft
        # foreach: torch defaults to it on CUDA only; on CPU the per-parameter loop was ~8% of a tiny
        # encoder's fine-tuning step (4x slower than foreach, bench: 2 cores). Same update.
        opt = torch.optim.AdamW(param_groups(self.model, ft), foreach=True)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = get_linear_schedule_with_warmup(opt, int(ft.warmup_ratio * total), total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class KeepBest(L.Callback):
    """Keep (in memory) the weights of the epoch with the best mean validation (selection) score.

    Used instead of ModelCheckpoint because the kept model is exported as safetensors, not as a
    pickled Lightning checkpoint, and a small fine-tuning model fits in memory.
    """

    def __init__(self):
        self.best_score = -math.inf
        self.best_epoch = self.best_step = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not pl_module.history:
            return
        last = pl_module.history[-1]
        if last["score"] > self.best_score:
            self.best_score, self.best_epoch, self.best_step = last["score"], last["epoch"], last["step"]
            self.best_state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
