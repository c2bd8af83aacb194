"""BertPretrainingModule's optimiser set-up under mixed precision (runs on CPU)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from bertops.model.presets import bert_config
from bertops.text.masking import PretrainingCollator
from bertops.train.pretrain_module import BertPretrainingModule
from tests.pretrain_helpers import tiny_pretraining_dataset, tiny_tokenizer

SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


class RecordingModule(BertPretrainingModule):
    """Records the gradient norm each optimizer step used (after clipping)."""

    norms: list[float]

    def on_train_start(self):
        super().on_train_start()
        self.norms = []

        def record(optimizer, args, kwargs):  # after the step: its gradients are still there
            grads = [p.grad.float() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            self.norms.append(float(torch.nn.utils.get_total_norm(grads)))

        self.trainer.optimizers[0].register_step_post_hook(record)


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_fused_adamw_with_gradient_clipping(precision):
    # Lightning's mixed-precision plugin raises for clipping with a fused optimizer; the module
    # clips itself when no fp16 loss scaler is involved. CPU has a fused AdamW too, so the
    # GPU path (bf16-mixed, fused, max_grad_norm) is exercised here.
    tok = tiny_tokenizer()
    ds = tiny_pretraining_dataset(tok, n_train=16, n_val=1, seed=1)["train"]
    collate = PretrainingCollator(tok, seed=0)
    loader = torch.utils.data.DataLoader([ds[i] for i in range(len(ds))], batch_size=8, collate_fn=collate)
    config = bert_config("tiny", len(tok), SMALL, pad_token_id=tok.pad_token_id)
    module = RecordingModule(config.to_dict(), learning_rate=1e-3, max_steps=2, fused_adamw=True,
                             peak_tflops=0.05, log_every_n_steps=1)
    clip = 1e-3  # far below the initial gradient norm, so clipping must act
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=2, gradient_clip_val=clip,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == 2
    assert trainer.optimizers[0].defaults["fused"] is True
    assert len(module.norms) == 2 and all(n <= clip * 1.01 for n in module.norms), module.norms


def test_tokens_per_s_counts_padding_and_nonpad_tokens_per_s_does_not():
    tok = tiny_tokenizer()
    ds = tiny_pretraining_dataset(tok, n_train=16, n_val=1, seed=1)["train"]
    rows = [ds[i] for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(rows, batch_size=8, collate_fn=PretrainingCollator(tok, seed=0))
    masks = [b["attention_mask"] for b in loader]
    assert all(0 < float(m.float().mean()) < 1 for m in masks)  # the batches do carry padding
    config = bert_config("tiny", len(tok), SMALL, pad_token_id=tok.pad_token_id)
    module = BertPretrainingModule(config.to_dict(), learning_rate=1e-3, max_steps=2, peak_tflops=0.05,
                                   log_every_n_steps=1)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=loader)
    assert len(module.perf_history) == 2
    for window, mask in zip(module.perf_history, masks):  # one batch per logging window here
        ratio = window["perf/nonpad_tokens_per_s"] / window["perf/tokens_per_s"]
        assert ratio == pytest.approx(float(mask.sum()) / mask.numel(), rel=1e-6)
