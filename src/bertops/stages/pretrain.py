"""Stage `pretrain`: MLM + NSP pretraining of BERT from scratch on artifacts/pretraining_data.

Inputs: `pretrain.data_dir` (DatasetDict train/validation), `pretrain.tokenizer_dir`.
Outputs under `pretrain.out_dir`: model/ (a standard BertForPreTraining + tokenizer files: loads
with `BertForPreTraining.from_pretrained` and `pipeline("fill-mask", ...)` without bertops),
metrics.json (held-out MLM/NSP accuracy next to trivial baselines), checkpoints/last.ckpt (a killed
run resumes from it), logs/metrics.csv and plots/pretrain_curves.png. With $BERTOPS_CHECKPOINT_STORE
(e.g. s3://checkpoints/bertops, the stack's stack.env sets it) the checkpoints are also copied there,
and a rerun on another machine resumes from them.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from bertops import tracking
from bertops.config import Params
from bertops.env import is_global_zero

log = logging.getLogger(__name__)
# a directory URL (s3://bucket/prefix) where checkpoints are copied and resumed from on any machine
CHECKPOINT_STORE_ENV = "BERTOPS_CHECKPOINT_STORE"


def main(params: Params) -> dict:
    from bertops.train.flops import FLOP_CONVENTION
    from bertops.train.pretrain import fit_pretraining

    p = params.pretrain
    out_dir = Path(p.out_dir)
    if not is_global_zero():  # DDP: the other ranks train, rank 0 alone tracks and writes outputs
        os.environ["BERTOPS_TRACKING"] = "off"
    section = {"model": params.model.model_dump(), "pretrain": p.model_dump(), "seed": params.seed}
    with tracking.stage_run("pretrain", section) as run:
        if run is not None:
            import mlflow

            mlflow.set_tag("bertops.flop_convention", FLOP_CONVENTION)
        # an operational setting like the tracking URI, not a parameter: DVC's stage hash ignores it
        result = fit_pretraining(params, p.data_dir, p.tokenizer_dir, out_dir,
                                 loggers=tracking.lightning_loggers(out_dir),
                                 checkpoint_store=os.environ.get(CHECKPOINT_STORE_ENV) or None)
        if is_global_zero():
            tracking.log_metrics({f"heldout.{k}": v for k, v in result["metrics"].items() if v is not None})
            if run is not None and result["metrics"]["warnings"]:  # shown on the run's page in the UI
                mlflow.set_tag("bertops.pretrain_warnings", " | ".join(result["metrics"]["warnings"]))
            plot = plot_curves(out_dir / "logs" / "metrics.csv", out_dir / "plots" / "pretrain_curves.png")
            tracking.log_artifact(out_dir / "metrics.json", "pretrain")
            tracking.log_artifact(plot, "pretrain/plots")
            tracking.log_artifact(out_dir / "model", "pretrain/model")
    return {"model_dir": result["model_dir"], "metrics_path": result["metrics_path"],
            "metrics": result["metrics"]}


def plot_curves(metrics_csv: Path, out: Path) -> Path:
    """Loss and accuracy curves from the Lightning CSV log. Always writes `out` (a declared output of
    the stage): with nothing logged (no file, or a run shorter than `log_every_n_steps`), a figure
    that says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertops.io import atomic_path

    series: dict[str, list[tuple[float, float]]] = {}
    if metrics_csv.exists():
        with open(metrics_csv, newline="") as f:
            for row in csv.DictReader(f):
                for key, value in row.items():
                    if value and key.startswith(("train/", "val/")) and row.get("step"):
                        series.setdefault(key, []).append((float(row["step"]), float(value)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, ("loss", "accuracy")):
        for key in sorted(series):
            if key.endswith(kind) and "/" in key:
                xs, ys = zip(*series[key])
                ax.plot(xs, ys, marker="o" if key.startswith("val/") else None, markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_title(f"pretraining {kind}")
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"nothing logged\n({metrics_csv.name})", ha="center", va="center",
                    transform=ax.transAxes)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out
