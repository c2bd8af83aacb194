"""One shared BERT encoder, one small head per task (MT-DNN style), saved without pickle.

    model = MultiTaskModel.from_pretrained("artifacts/finetune/model")
    model.predict("sentiment", ["a gorgeous, witty film"])
    # [{"label": "fresh", "score": 0.93, "scores": {"rotten": 0.07, "fresh": 0.93}}]
    model.predict("define-qa", [("Which word means: ...?", "context ...")])
    # [{"answer": "...", "score": 7.1, "start": 12, "end": 18}]

This file is self-contained (standard library + torch; transformers and safetensors imported
when loading): the MLflow pyfunc ships it alone as `code_paths`, so it holds everything
inference needs. Training and evaluation reuse the same functions (via bertops.data.tasks).

Task types and their features:
- sequence_classification / pair_classification: [CLS] A [SEP] (B [SEP]) with segment ids; the
  head reads the pooled [CLS] vector.
- token_classification: words tokenized with `is_split_into_words`; only the first sub-token of
  a word carries its label, the rest get -100 (ignored by the loss), as the BERT paper's NER.
- extractive_qa (SQuAD format): question + context, long contexts split into windows of
  max_seq_length tokens overlapping by doc_stride (tokenizer `return_overflowing_tokens`, as the
  Hugging Face QA examples); a window without the whole answer points at [CLS] (position 0);
  `best_span` picks the best valid span over all windows of an example.

Features given to heads combine encoder layers (`feature_layers`), the BERT paper's feature-based
comparison (Table 7): last, second_to_last, sum_last_four, concat_last_four, and weighted_sum
(ELMo's learned softmax-normalised scalar mix of all layers, embeddings included).

Saved layout (`save_pretrained`): the encoder as a standard Hugging Face `BertModel`
(config.json + model.safetensors), the tokenizer files, `heads.safetensors` (task heads, layer
mix, and the classification pooler when the encoder's own is not used) and
`multitask_config.json` (tasks with labels and lengths, feature_layers, freeze flag).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

try:
    from bertops.errors import BertopsError
except ImportError:  # inside an MLflow model, where this file travels alone
    BertopsError = ValueError  # type: ignore[misc,assignment]

CLASSIFICATION_TYPES = ("sequence_classification", "pair_classification")
IGNORE_INDEX = -100  # torch CrossEntropyLoss default ignore_index
FEATURE_LAYERS = ("last", "second_to_last", "sum_last_four", "concat_last_four", "weighted_sum")
CONFIG_NAME = "multitask_config.json"
HEADS_NAME = "heads.safetensors"
FORMAT_VERSION = 1


# =============================================================================================
# Task specs, features and decoding (pure Python over a fast tokenizer)


def label_str(value: Any) -> str:
    """Label values as strings; JSON booleans stay JSON-spelled ("true"/"false")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def bio_tags(labels: Sequence[Any]) -> list[str]:
    """Tag set of a token task: entity types [class, method] -> [O, B-class, I-class, B-method, I-method].

    A list that already is a tag set (only "O", "B-x", "I-x") is kept as given, in its order
    (datasets with integer tags, e.g. conll2003, index into it).
    """
    names = [label_str(x) for x in labels]
    if all(n == "O" or n[:2] in ("B-", "I-") for n in names):
        return names
    return ["O"] + [f"{p}-{n}" for n in names for p in ("B", "I")]


@dataclass
class TaskSpec:
    """What a saved model must know about a task to encode inputs and decode outputs (JSON-able)."""

    name: str
    type: str
    labels: list[str] = field(default_factory=list)  # classes, or BIO tags for token tasks
    max_seq_length: int = 128
    doc_stride: int = 64
    max_answer_length: int = 30
    text_fields: list[str] = field(default_factory=list)
    tokens_field: str = "tokens"
    label_field: str = "label"
    metric: str = "accuracy"
    loss_weight: float = 1.0

    @classmethod
    def from_params(cls, name: str, tp) -> "TaskSpec":
        """From a bertops.config.TaskParams."""
        if tp.type == "token_classification":
            labels = bio_tags(tp.labels)
        else:
            labels = [label_str(x) for x in tp.labels]
        if len(set(labels)) != len(labels):
            raise BertopsError(f"task {name!r}: labels are not unique: {labels}")
        return cls(name=name, type=tp.type, labels=labels, max_seq_length=tp.max_seq_length,
                   doc_stride=tp.doc_stride, max_answer_length=tp.max_answer_length,
                   text_fields=list(tp.text_fields), tokens_field=tp.tokens_field,
                   label_field=tp.label_field, metric=tp.metric, loss_weight=tp.loss_weight)

    @property
    def num_labels(self) -> int:
        return 2 if self.type == "extractive_qa" else len(self.labels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TaskSpec":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def record_input(spec: TaskSpec, rec: dict) -> Any:
    """The model input of a record, in the form `MultiTaskModel.predict` takes."""
    if spec.type == "sequence_classification":
        return rec[spec.text_fields[0]]
    if spec.type == "pair_classification":
        return (rec[spec.text_fields[0]], rec[spec.text_fields[1]])
    if spec.type == "token_classification":
        return [str(t) for t in rec[spec.tokens_field]]
    return (rec["question"], rec["context"])


def gold_label(spec: TaskSpec, rec: dict) -> Any:
    """Gold answer of a record: label string; list of BIO tags; list of acceptable answer texts (QA)."""
    if spec.type in CLASSIFICATION_TYPES:
        value = rec[spec.label_field]
        if isinstance(value, int) and not isinstance(value, bool) and spec.labels \
                and label_str(value) not in spec.labels and 0 <= value < len(spec.labels):
            return spec.labels[value]  # a `datasets` ClassLabel index
        return label_str(value)
    if spec.type == "token_classification":
        return [spec.labels[t] if isinstance(t, int) else str(t) for t in rec[spec.label_field]]
    return list(rec.get("answers", {}).get("text", []))


def normalize_input(spec: TaskSpec, x: Any) -> Any:
    """Accept a record (dict with the task's fields) or the plain form; return the plain form."""
    if isinstance(x, dict):
        return record_input(spec, x)
    if spec.type == "sequence_classification":
        if not isinstance(x, str):
            raise BertopsError(f"task {spec.name!r} takes a text, got {type(x).__name__}")
        return x
    if spec.type in ("pair_classification", "extractive_qa"):
        if not (isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(t, str) for t in x)):
            what = "(text_a, text_b)" if spec.type == "pair_classification" else "(question, context)"
            raise BertopsError(f"task {spec.name!r} takes a pair {what}, got {x!r:.80}")
        return tuple(x)
    if isinstance(x, str):
        return x.split()
    return [str(t) for t in x]


# -- features ---------------------------------------------------------------------------------


def encode_classification(tokenizer, spec: TaskSpec, inputs: Sequence[Any],
                          labels: Sequence[str] | None = None) -> list[dict]:
    """[CLS] A [SEP] (B [SEP]); pairs are truncated longest-first, as BERT's run_classifier."""
    if spec.type == "pair_classification":
        enc = tokenizer([a for a, _ in inputs], [b for _, b in inputs], truncation="longest_first",
                        max_length=spec.max_seq_length)
    else:
        enc = tokenizer(list(inputs), truncation=True, max_length=spec.max_seq_length)
    label_id = {name: i for i, name in enumerate(spec.labels)}
    feats = []
    for i in range(len(inputs)):
        f = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
             "attention_mask": enc["attention_mask"][i], "example_index": i}
        if labels is not None:
            f["labels"] = label_id[labels[i]]
        feats.append(f)
    return feats


def encode_token_classification(tokenizer, spec: TaskSpec, token_lists: Sequence[list[str]],
                                tag_lists: Sequence[list[str]] | None = None) -> list[dict]:
    """Label the first sub-token of each word; other sub-tokens and specials get -100.

    Words beyond max_seq_length are cut (and predicted "O"); `word_ids` (-1 = none) is kept so
    predictions can be mapped back to words.
    """
    enc = tokenizer([list(t) for t in token_lists], is_split_into_words=True, truncation=True,
                    max_length=spec.max_seq_length)
    tag_id = {name: i for i, name in enumerate(spec.labels)}
    feats = []
    for i in range(len(token_lists)):
        word_ids = enc.word_ids(i)
        f = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
             "attention_mask": enc["attention_mask"][i], "example_index": i,
             "word_ids": [-1 if w is None else w for w in word_ids]}
        if tag_lists is not None:
            labels, prev = [], None
            for w in word_ids:
                labels.append(IGNORE_INDEX if w is None or w == prev else tag_id[tag_lists[i][w]])
                prev = w
            f["labels"] = labels
        feats.append(f)
    return feats


def _max_query_tokens(spec: TaskSpec) -> int:
    # Room for [CLS] q [SEP] c [SEP] with a context window longer than doc_stride (tokenizers
    # refuses otherwise); half the sequence at most, as BERT's max_query_length 64 of 384.
    n = min(spec.max_seq_length // 2, spec.max_seq_length - spec.doc_stride - 4)
    if n < 1:
        raise BertopsError(f"task {spec.name!r}: doc_stride {spec.doc_stride} leaves no room in "
                           f"max_seq_length {spec.max_seq_length}")
    return n


def _truncate_questions(tokenizer, spec: TaskSpec, questions: Sequence[str]) -> list[str]:
    limit = _max_query_tokens(spec)
    enc = tokenizer(list(questions), add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offsets in zip(questions, enc["offset_mapping"]):
        out.append(q if len(offsets) <= limit else q[:offsets[limit - 1][1]])
    return out


def encode_qa(tokenizer, spec: TaskSpec, questions: Sequence[str], contexts: Sequence[str],
              answers: Sequence[dict] | None = None) -> list[dict]:
    """Question + context windows (the Hugging Face run_qa preprocessing).

    Each feature keeps `example_index` and `offset_mapping` (character span per token; None for
    question/special tokens) for `best_span`. With `answers` (SQuAD dicts; the first answer is the
    target), `start_positions`/`end_positions` are token positions in the window, or 0 ([CLS])
    when the answer is not wholly inside it.
    """
    questions = _truncate_questions(tokenizer, spec, questions)
    enc = tokenizer(questions, list(contexts), truncation="only_second", max_length=spec.max_seq_length,
                    stride=spec.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    feats = []
    for i in range(len(enc["input_ids"])):
        ex = enc["overflow_to_sample_mapping"][i]
        seq_ids = enc.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq_ids)]
        f = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
             "attention_mask": enc["attention_mask"][i], "example_index": ex, "offset_mapping": offsets}
        if answers is not None:
            f["start_positions"], f["end_positions"] = _answer_positions(answers[ex], offsets)
        feats.append(f)
    return feats


def _answer_positions(answer: dict, offsets: list) -> tuple[int, int]:
    if not answer.get("text"):
        return 0, 0
    start_char = answer["answer_start"][0]
    end_char = start_char + len(answer["text"][0])
    ctx = [i for i, o in enumerate(offsets) if o is not None]
    if not ctx or offsets[ctx[0]][0] > start_char or offsets[ctx[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in ctx if offsets[i][1] > start_char)
    end = next(i for i in reversed(ctx) if offsets[i][0] < end_char)
    return start, end


def encode(tokenizer, spec: TaskSpec, inputs: Sequence[Any], golds: Sequence[Any] | None = None) -> list[dict]:
    """Features for plain inputs (see `normalize_input`), with training targets when golds are given.

    For QA, golds are SQuAD `answers` dicts ({"text": [...], "answer_start": [...]}).
    """
    if spec.type in CLASSIFICATION_TYPES:
        return encode_classification(tokenizer, spec, inputs, golds)
    if spec.type == "token_classification":
        return encode_token_classification(tokenizer, spec, inputs, golds)
    return encode_qa(tokenizer, spec, [q for q, _ in inputs], [c for _, c in inputs], golds)


# -- decoding ---------------------------------------------------------------------------------


def word_tags(word_ids: Sequence[int], tag_ids: Sequence[int], labels: Sequence[str], n_words: int) -> list[str]:
    """Word-level tags from per-token predictions: the first sub-token's tag; cut-off words are "O"."""
    tags = ["O"] * n_words
    seen = set()
    for w, t in zip(word_ids, tag_ids):
        if w >= 0 and w not in seen:
            seen.add(w)
            tags[w] = labels[int(t)]
    return tags


def best_span(windows: Sequence[dict], context: str, max_answer_length: int, n_best: int = 20) -> dict:
    """Best answer span of one example over all its windows.

    Each window: {"start_logits", "end_logits", "offset_mapping"} (offsets None outside the
    context). A span is valid if both ends are context tokens, start <= end and it is at most
    max_answer_length tokens; its score is start_logit + end_logit. Only the n_best start and end
    candidates of each window are paired (as the BERT reference code does) to keep it O(n_best²).
    Returns {"text", "score", "start", "end"} (character offsets; "" and -inf when none is valid).
    """
    best = {"text": "", "score": -math.inf, "start": -1, "end": -1}
    for w in windows:
        starts, ends, offsets = list(w["start_logits"]), list(w["end_logits"]), w["offset_mapping"]
        n = min(len(starts), len(offsets))
        top_s = sorted(range(n), key=lambda i: starts[i], reverse=True)[:n_best]
        top_e = sorted(range(n), key=lambda i: ends[i], reverse=True)[:n_best]
        for s in top_s:
            if offsets[s] is None:
                continue
            for e in top_e:
                if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(starts[s]) + float(ends[e])
                if score > best["score"]:
                    a, b = offsets[s][0], offsets[e][1]
                    best = {"text": context[a:b], "score": score, "start": a, "end": b}
    return best


def postprocess_qa(features: Sequence[dict], start_logits: Sequence[Sequence[float]],
                   end_logits: Sequence[Sequence[float]], contexts: Sequence[str],
                   max_answer_length: int, n_best: int = 20) -> list[dict]:
    """`best_span` for every example, grouping features by their `example_index`."""
    windows: list[list[dict]] = [[] for _ in contexts]
    for f, s, e in zip(features, start_logits, end_logits):
        windows[f["example_index"]].append({"start_logits": s, "end_logits": e,
                                            "offset_mapping": f["offset_mapping"]})
    return [best_span(w, c, max_answer_length, n_best) for w, c in zip(windows, contexts)]


# =============================================================================================
# Model


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


def _head(spec: TaskSpec, in_dim: int, pooled_dim: int, dropout: float) -> nn.Module:
    if spec.type == "extractive_qa":
        return nn.Linear(in_dim, 2)  # start / end logits per token, as BertForQuestionAnswering
    dim = pooled_dim if spec.type in CLASSIFICATION_TYPES else in_dim
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, spec.num_labels))


class MultiTaskModel(nn.Module):
    """A `BertModel` encoder shared by every task, and a head per task.

    Classification heads read the pooled [CLS] vector: the encoder's own pooler (pretrained by
    NSP) when features are its last layer and it is fine-tuned, else a fresh `Pooler` over the
    combined features. Token and QA heads read every token's features.
    """

    def __init__(self, encoder, tokenizer, tasks: Sequence[TaskSpec], feature_layers: str = "last",
                 freeze_encoder: bool = False, classifier_dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.tasks = {t.name: t for t in tasks}
        self.feature_layers = feature_layers
        self.freeze_encoder = freeze_encoder
        self.classifier_dropout = classifier_dropout
        cfg = encoder.config
        self.combiner = LayerCombiner(feature_layers, cfg.num_hidden_layers, cfg.hidden_size)
        self.use_encoder_pooler = (feature_layers == "last" and not freeze_encoder
                                   and getattr(encoder, "pooler", None) is not None)
        self.pooler = None if self.use_encoder_pooler else Pooler(self.combiner.out_dim, cfg.hidden_size)
        self.heads = nn.ModuleDict({t.name: _head(t, self.combiner.out_dim, cfg.hidden_size, classifier_dropout)
                                    for t in tasks})
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def build(cls, encoder_dir: str | Path, tasks: Sequence[TaskSpec], random_init: bool = False,
              **kwargs) -> "MultiTaskModel":
        """A fresh model from a HF BERT checkpoint dir (encoder + tokenizer files)."""
        from transformers import AutoTokenizer, BertConfig, BertModel

        encoder_dir = Path(encoder_dir)
        if not (encoder_dir / "config.json").exists():
            raise BertopsError(f"{encoder_dir}: not a Hugging Face model dir (no config.json); "
                               "run the pretrain stage or set finetune.init_dir")
        tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
        if random_init:
            encoder = BertModel(BertConfig.from_pretrained(encoder_dir))
        else:
            encoder = BertModel.from_pretrained(encoder_dir)
        return cls(encoder, tokenizer, tasks, **kwargs)

    def train(self, mode: bool = True) -> "MultiTaskModel":
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # a frozen feature extractor: no dropout either
        return self

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits: [batch, num_labels] (classification), [batch, seq, num_labels] (token), [batch, seq, 2] (QA)."""
        spec = self.tasks[task]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               output_hidden_states=self.combiner.needs_all_layers)
        features = self.combiner(out.last_hidden_state, out.hidden_states)
        if spec.type in CLASSIFICATION_TYPES:
            pooled = out.pooler_output if self.use_encoder_pooler else self.pooler(features)
            return self.heads[task](pooled)
        return self.heads[task](features)

    @staticmethod
    def loss(spec: TaskSpec, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        ce = nn.functional.cross_entropy
        if spec.type in CLASSIFICATION_TYPES:
            return ce(logits, batch["labels"])
        if spec.type == "token_classification":
            return ce(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
        # Positions beyond the (padded) window are clamped, as BertForQuestionAnswering does.
        n = logits.size(1)
        start = ce(logits[..., 0], batch["start_positions"].clamp(0, n - 1))
        end = ce(logits[..., 1], batch["end_positions"].clamp(0, n - 1))
        return (start + end) / 2

    # -- batching & decoding ---------------------------------------------------------------------

    def collate(self, features: Sequence[dict]) -> dict:
        return collate(features, self.tokenizer.pad_token_id or 0)

    @torch.no_grad()
    def logits(self, task: str, features: Sequence[dict], batch_size: int = 64) -> list[torch.Tensor]:
        """Per-feature logits, trimmed to each feature's own length (float32, CPU)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out: list[torch.Tensor] = []
        try:
            for i in range(0, len(features), batch_size):
                chunk = features[i:i + batch_size]
                b = self.collate(chunk)
                logits = self(task, **{k: b[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")})
                logits = logits.float().cpu()
                for j, f in enumerate(chunk):
                    out.append(logits[j] if logits.dim() == 2 else logits[j, :len(f["input_ids"])])
        finally:
            self.train(was_training)
        return out

    def decode(self, task: str, inputs: Sequence[Any], features: Sequence[dict],
               logits: Sequence[torch.Tensor]) -> list[dict]:
        """Turn per-feature logits into one prediction dict per input (see `predict`)."""
        spec = self.tasks[task]
        if spec.type in CLASSIFICATION_TYPES:
            preds = []
            for lg in logits:
                p = torch.softmax(lg, -1)
                k = int(p.argmax())
                preds.append({"label": spec.labels[k], "score": float(p[k]),
                              "scores": {name: float(x) for name, x in zip(spec.labels, p)}})
            return preds
        if spec.type == "token_classification":
            preds = []
            for words, f, lg in zip(inputs, features, logits):
                p = torch.softmax(lg, -1)
                tags = word_tags(f["word_ids"], p.argmax(-1).tolist(), spec.labels, len(words))
                scores = [0.0] * len(words)
                seen = set()
                for w, row in zip(f["word_ids"], p):
                    if w >= 0 and w not in seen:
                        seen.add(w)
                        scores[w] = float(row.max())
                preds.append({"tokens": list(words), "tags": tags, "scores": scores})
            return preds
        spans = postprocess_qa(features, [lg[:, 0].tolist() for lg in logits], [lg[:, 1].tolist() for lg in logits],
                                 [c for _, c in inputs], spec.max_answer_length)
        return [{"answer": s["text"], "score": s["score"], "start": s["start"], "end": s["end"]} for s in spans]

    def predict(self, task: str, inputs: Sequence[Any], batch_size: int = 64) -> list[dict]:
        """Predictions for raw inputs.

        inputs, per task type: a text (sequence_classification); (text_a, text_b)
        (pair_classification); a list of words or a whitespace-separated string
        (token_classification); (question, context) (extractive_qa). A record dict with the
        task's data fields is accepted too.
        Returns, per input: {"label", "score", "scores"}; {"tokens", "tags", "scores"};
        {"answer", "score", "start", "end"} (character offsets into the context).
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
        spec = self.tasks.get(task)
        if spec is None:
            raise BertopsError(f"unknown task {task!r}; this model has {sorted(self.tasks)}")
        needs_pair = spec.type in ("pair_classification", "extractive_qa")
        if needs_pair and text_pair is None:
            raise BertopsError(f"task {task!r} ({spec.type}) needs text_pair")
        out = self.predict(task, [(text, text_pair) if needs_pair else text])[0]
        if spec.type == "token_classification":
            scores = out["scores"]
            return {**out, "prediction": " ".join(out["tags"]),
                    "score": sum(scores) / len(scores) if scores else 0.0}
        if spec.type == "extractive_qa":
            return {**out, "prediction": out["answer"]}
        return {**out, "prediction": out["label"]}

    # -- save / load -----------------------------------------------------------------------------

    def config_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "feature_layers": self.feature_layers,
                "freeze_encoder": self.freeze_encoder, "classifier_dropout": self.classifier_dropout,
                "tasks": [t.to_dict() for t in self.tasks.values()]}

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def save_pretrained(self, out_dir: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(out)  # safetensors by default
        self.tokenizer.save_pretrained(out)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head_state_dict().items()},
                  str(out / HEADS_NAME))
        (out / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device = "cpu") -> "MultiTaskModel":
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, BertModel

        model_dir = Path(model_dir)
        if not (model_dir / CONFIG_NAME).exists():
            raise BertopsError(f"{model_dir}: not a bertops multi-task model (no {CONFIG_NAME})")
        cfg = json.loads((model_dir / CONFIG_NAME).read_text(encoding="utf-8"))
        encoder = BertModel.from_pretrained(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = cls(encoder, tokenizer, [TaskSpec.from_dict(t) for t in cfg["tasks"]],
                    feature_layers=cfg["feature_layers"], freeze_encoder=cfg["freeze_encoder"],
                    classifier_dropout=cfg.get("classifier_dropout", 0.1))
        missing, unexpected = model.load_state_dict(load_file(str(model_dir / HEADS_NAME)), strict=False)
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise RuntimeError(f"{model_dir / HEADS_NAME}: missing {missing}, unexpected {unexpected}")
        return model.to(device).eval()


def collate(features: Sequence[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of features into tensors.

    Written here rather than DataCollatorWithPadding because features of the four task types
    carry per-token labels (padded with -100), scalar targets and non-tensor metadata
    (offsets, word ids) that must be left out of the batch.
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
        batch[key] = torch.tensor(values, dtype=torch.long)
    return batch
