"""The model: one shared BERT encoder, one small head per task (MT-DNN style), saved without pickle.

Features given to heads combine encoder layers (`feature_layers`), the BERT paper's feature-based
comparison (Table 7): last, second_to_last, sum_last_four, concat_last_four, and weighted_sum
(ELMo's learned softmax-normalised scalar mix of all layers, embeddings included). What differs
between kinds of task (features, head, loss, decoding) is asked of the task-type registry.

Saved layout (`save_pretrained`): the encoder as a standard Hugging Face `BertModel`
(config.json + model.safetensors), the tokenizer files, `heads.safetensors` (task heads, layer
mix, and the classification pooler when the encoder's own is not used) and
`multitask_config.json` (tasks with labels and lengths, feature_layers, freeze flag, adapter
settings). finetune.mode adapters (`adapters=`): one LoRA adapter per task on the frozen encoder,
each task's adapter and head saved on its own under adapters/<task>/ (see adapters.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import adapters as adapters_
from .features import encode, normalize_input
from .serving import DEFAULT_BATCH_SIZE, predict_rows, row_input
from .spec import IGNORE_INDEX, BertopsError, TaskSpec
from .task_types import get_task_type

FEATURE_LAYERS = ("last", "second_to_last", "sum_last_four", "concat_last_four", "weighted_sum")
POOLINGS = ("cls", "mean")
CONFIG_NAME = "multitask_config.json"
HEADS_NAME = "heads.safetensors"
FORMAT_VERSION = 1


class LayerCombiner(nn.Module):
    """Combine the encoder's hidden states (embeddings + every layer) into token features."""

    def __init__(self, mode: str, num_hidden_layers: int, hidden_size: int):
        super().__init__()
        if mode not in FEATURE_LAYERS:
            raise ValueError(f"feature_layers must be one of {FEATURE_LAYERS}, got {mode!r}")
        self.mode = mode
        # "last four" of an encoder with fewer layers (tiny test models) is all of its layers
        self.out_dim = hidden_size * (min(4, num_hidden_layers) if mode == "concat_last_four" else 1)
        if mode == "weighted_sum":
            self.layer_weights = nn.Parameter(torch.zeros(num_hidden_layers + 1))
            self.gamma = nn.Parameter(torch.ones(()))

    @property
    def needs_all_layers(self) -> bool:
        return self.mode != "last"

    def forward(self, last_hidden_state: torch.Tensor, hidden_states: Sequence[torch.Tensor] | None) -> torch.Tensor:
        if self.mode == "last":
            return last_hidden_state
        layers = hidden_states[1:]  # hidden_states[0] is the embedding output
        if self.mode == "second_to_last":
            return layers[-2] if len(layers) >= 2 else layers[-1]
        if self.mode == "sum_last_four":
            return torch.stack(layers[-4:]).sum(0)
        if self.mode == "concat_last_four":
            return torch.cat(layers[-4:], dim=-1)
        w = torch.softmax(self.layer_weights, 0)
        return self.gamma * torch.einsum("l,lbsh->bsh", w, torch.stack(tuple(hidden_states)))


class Pooler(nn.Module):
    """[CLS] feature -> dense -> tanh, as BertPooler (used when the encoder's pooler is not)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.dense = nn.Linear(in_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(features[:, 0]))


def mean_pool(features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the features of every real (unpadded) token: [batch, seq, dim] -> [batch, dim]."""
    mask = attention_mask.unsqueeze(-1).to(features.dtype)
    return (features * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class MultiTaskModel(nn.Module):
    """A `BertModel` encoder shared by every task, and a head per task.

    Heads of pooled task types (classification) read one vector per input. pooling "cls" (BERT):
    the pooled [CLS] vector, from the encoder's own pooler (pretrained by NSP) when features are its
    last layer and it is fine-tuned, else from a fresh `Pooler` over the combined features. pooling
    "mean" (Sentence-BERT): the mean of every real token's features, no pooler. Other heads read
    every token's features.
    """

    def __init__(self, encoder, tokenizer, tasks: Sequence[TaskSpec], feature_layers: str = "last",
                 freeze_encoder: bool = False, classifier_dropout: float = 0.1, adapters: dict | None = None,
                 pooling: str = "cls"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if adapters is not None:
            if feature_layers != "last" or freeze_encoder:
                raise BertopsError("adapters need feature_layers 'last' and a trainable encoder: a layer mix or "
                                   "a fresh pooler would be trained by every task, not one")
            if not adapters_.is_wrapped(encoder):
                encoder = adapters_.wrap_encoder(encoder, [t.name for t in tasks], adapters)
            self._adapter_lock = threading.Lock()  # the active adapter is the model's state: one task at a time
            self._active_adapter = None
        self.adapters = adapters
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.tasks = {t.name: t for t in tasks}
        self.feature_layers = feature_layers
        self.freeze_encoder = freeze_encoder
        self.classifier_dropout = classifier_dropout
        self.pooling = pooling
        cfg = encoder.config
        self.combiner = LayerCombiner(feature_layers, cfg.num_hidden_layers, cfg.hidden_size)
        self.use_encoder_pooler = (pooling == "cls" and feature_layers == "last" and not freeze_encoder
                                   and getattr(encoder, "pooler", None) is not None)
        self.pooler = (Pooler(self.combiner.out_dim, cfg.hidden_size)
                       if pooling == "cls" and not self.use_encoder_pooler else None)
        pooled_dim = cfg.hidden_size if pooling == "cls" else self.combiner.out_dim
        self.heads = nn.ModuleDict({
            t.name: get_task_type(t.type).head(t, self.combiner.out_dim, pooled_dim, classifier_dropout)
            for t in tasks})
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def build(cls, encoder_dir: str | Path, tasks: Sequence[TaskSpec], random_init: bool = False,
              encoder_dropout: float | None = None, **kwargs) -> MultiTaskModel:
        """A fresh model from a HF BERT checkpoint dir (encoder + tokenizer files); encoder_dropout
        replaces its config's hidden and attention dropout (None: keep them)."""
        from transformers import AutoTokenizer, BertConfig, BertModel

        encoder_dir = Path(encoder_dir)
        if not (encoder_dir / "config.json").exists():
            raise BertopsError(f"{encoder_dir}: not a Hugging Face model dir (no config.json); "
                               "run the pretrain stage or set finetune.init_dir")
        tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
        dropout = ({} if encoder_dropout is None else
                   {"hidden_dropout_prob": encoder_dropout, "attention_probs_dropout_prob": encoder_dropout})
        if random_init:
            encoder = BertModel(BertConfig.from_pretrained(encoder_dir, **dropout))
        else:
            encoder = BertModel.from_pretrained(encoder_dir, **dropout)
        return cls(encoder, tokenizer, tasks, **kwargs)

    def train(self, mode: bool = True) -> MultiTaskModel:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # a frozen feature extractor: no dropout either
        return self

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits: [batch, num_labels] (classification), [batch, seq, num_labels] (token), [batch, seq, 2] (QA)."""
        if self.adapters is None:
            return self._forward(task, input_ids, attention_mask, token_type_ids)
        with self._adapter_lock:  # the task's own adapter (serving threads may run other tasks)
            if self._active_adapter != task:
                self.encoder.set_adapter(task)
                self._active_adapter = task
            return self._forward(task, input_ids, attention_mask, token_type_ids)

    def _forward(self, task, input_ids, attention_mask, token_type_ids):
        spec = self.tasks[task]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               output_hidden_states=self.combiner.needs_all_layers)
        features = self.combiner(out.last_hidden_state, out.hidden_states)
        if get_task_type(spec.type).pooled:
            if self.pooling == "mean":
                pooled = mean_pool(features, attention_mask)
            else:
                pooled = out.pooler_output if self.use_encoder_pooler else self.pooler(features)
            return self.heads[task](pooled)
        return self.heads[task](features)

    @staticmethod
    def loss(spec: TaskSpec, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return get_task_type(spec.type).loss(spec, logits, batch)

    # -- batching & decoding ---------------------------------------------------------------------

    def collate(self, features: Sequence[dict]) -> dict:
        return collate(features, self.tokenizer.pad_token_id or 0)

    @torch.no_grad()
    def logits(self, task: str, features: Sequence[dict], batch_size: int = 64) -> list[torch.Tensor]:
        """Per-feature logits in the order of `features`, trimmed to each feature's own length
        (float32, CPU).

        ceil(len(features) / batch_size) forward passes. Features are batched longest first, so
        a batch holds features of similar length and pads little; padding is masked
        (attention_mask), so a feature's logits do not depend on its batch beyond float rounding.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))  # stable
        out: list[torch.Tensor | None] = [None] * len(features)
        try:
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                b = self.collate([features[i] for i in index])
                logits = self(task, **{k: b[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")})
                logits = logits.float().cpu()
                for j, i in enumerate(index):
                    out[i] = logits[j] if logits.dim() == 2 else logits[j, :len(features[i]["input_ids"])]
        finally:
            self.train(was_training)
        return out  # type: ignore[return-value]

    def decode(self, task: str, inputs: Sequence[Any], features: Sequence[dict],
               logits: Sequence[torch.Tensor]) -> list[dict]:
        """Turn per-feature logits into one prediction dict per input (see `predict`)."""
        spec = self.tasks[task]
        return get_task_type(spec.type).decode(spec, inputs, features, logits)

    def predict(self, task: str, inputs: Sequence[Any], batch_size: int = 64) -> list[dict]:
        """Predictions for raw inputs.

        inputs, per task type: a text (sequence_classification); (text_a, text_b)
        (pair_classification); a list of words or a whitespace-separated string
        (token_classification); (question, context) (extractive_qa). A record dict with the
        task's data fields is accepted too.
        Returns, per input: {"label", "score", "scores"}; {"tokens", "tags", "scores"};
        {"answer", "score", "logit_score", "start", "end"} (character offsets into the context; score is
        the span's probability, logit_score the start + end logits it was chosen by).
        """
        if task not in self.tasks:
            raise BertopsError(f"unknown task {task!r}; this model has {sorted(self.tasks)}")
        spec = self.tasks[task]
        inputs = [normalize_input(spec, x) for x in inputs]
        if not inputs:
            return []
        features = encode(self.tokenizer, spec, inputs)
        return self.decode(task, inputs, features, self.logits(task, features, batch_size))

    def predict_one(self, task: str, text: str, text_pair: str | None = None) -> dict:
        """One flat prediction for serving (two text columns in, one answer out).

        `text` is the sentence, the first sentence of a pair, the words to tag (whitespace
        split) or the question; `text_pair` the second sentence or the QA context. Returns the
        `predict` dict plus "prediction": the label, the space-joined tags, or the answer text,
        and "score" (for tags: the mean over words of the chosen tag's probability).
        """
        out = self.predict(task, [row_input(self, task, text, text_pair)])[0]
        return get_task_type(self.tasks[task].type).flat(out)

    def predict_rows(self, rows: Sequence[dict], batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict]:
        """`predict_one` for every row of a request ({"task", "text", "text_pair"}), batched:
        rows grouped by task, each task's features run in batches (`serving.predict_rows`)."""
        return predict_rows({t: self for t in self.tasks}, rows, batch_size)

    # -- save / load -----------------------------------------------------------------------------

    def config_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "feature_layers": self.feature_layers,
                "freeze_encoder": self.freeze_encoder, "classifier_dropout": self.classifier_dropout,
                "pooling": self.pooling, "adapters": self.adapters, "tasks": [t.to_dict() for t in self.tasks.values()]}

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def save_pretrained(self, out_dir: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        heads = self.head_state_dict()
        if self.adapters is None:
            self.encoder.save_pretrained(out)  # safetensors by default
        else:  # the base encoder, and each task's adapter and head on its own
            heads = adapters_.save(self, out, heads)
        self.tokenizer.save_pretrained(out)
        save_file({k: v.detach().contiguous().cpu() for k, v in heads.items()}, str(out / HEADS_NAME))
        (out / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device = "cpu") -> MultiTaskModel:
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, BertModel

        model_dir = Path(model_dir)
        if not (model_dir / CONFIG_NAME).exists():
            raise BertopsError(f"{model_dir}: not a bertops multi-task model (no {CONFIG_NAME})")
        cfg = json.loads((model_dir / CONFIG_NAME).read_text(encoding="utf-8"))
        encoder = BertModel.from_pretrained(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tasks = [TaskSpec.from_dict(t) for t in cfg["tasks"]]
        heads = load_file(str(model_dir / HEADS_NAME))
        if cfg.get("adapters") is not None:
            encoder = adapters_.load_encoder(encoder, model_dir, [t.name for t in tasks])
            heads.update(adapters_.load_heads(model_dir, [t.name for t in tasks]))
        model = cls(encoder, tokenizer, tasks,
                    feature_layers=cfg["feature_layers"], freeze_encoder=cfg["freeze_encoder"],
                    classifier_dropout=cfg.get("classifier_dropout", 0.1), adapters=cfg.get("adapters"),
                    pooling=cfg.get("pooling", "cls"))
        missing, unexpected = model.load_state_dict(heads, strict=False)
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise RuntimeError(f"{model_dir / HEADS_NAME}: missing {missing}, unexpected {unexpected}")
        return model.to(device).eval()


def collate(features: Sequence[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of features into tensors.

    Written here rather than DataCollatorWithPadding because features carry per-token labels
    (padded with -100), scalar targets and non-tensor metadata (offsets, word ids) that must be
    left out of the batch. Targets are integer tensors, or float ones when the values are floats
    (a regression target).
    """
    n = max(len(f["input_ids"]) for f in features)
    pad = {"input_ids": pad_token_id, "token_type_ids": 0, "attention_mask": 0, "labels": IGNORE_INDEX}
    batch: dict[str, torch.Tensor] = {}
    for key in ("input_ids", "token_type_ids", "attention_mask", "labels", "start_positions", "end_positions"):
        if key not in features[0]:
            continue
        values = [f[key] for f in features]
        if isinstance(values[0], list):
            values = [v + [pad[key]] * (n - len(v)) for v in values]
        first = values[0][0] if isinstance(values[0], list) and values[0] else values[0]
        batch[key] = torch.tensor(values, dtype=torch.float if isinstance(first, float) else torch.long)
    return batch
