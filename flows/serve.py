"""Serve the nightly retraining schedule from this machine, without a work pool:

    python -m flows.serve                                    # every stage here
    python -m flows.serve --gpu-deployment bertops-stage/gpu  # pretrain/finetune/evaluate on the gpu pool

It registers deployment `bertops-pipeline/nightly-retrain` with the Prefect server (PREFECT_API_URL)
and runs it on schedule, or when triggered: `prefect deployment run bertops-pipeline/nightly-retrain`.
The cron, time zone and default parameters come from prefect.yaml, so there is one schedule
definition; `--gpu-deployment` (or BERTOPS_GPU_DEPLOYMENT) sets the parameter `gpu_deployment`.
Stop with Ctrl-C (SIGTERM) before stopping the Prefect server.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml
from prefect.schedules import Cron

from flows.pipeline import pipeline

ROOT = Path(__file__).resolve().parents[1]


def _nightly(path: Path) -> dict:
    spec = yaml.safe_load(path.read_text())
    return next(d for d in spec["deployments"] if d["name"] == "nightly-retrain")


def nightly_schedule(path: Path = ROOT / "prefect.yaml") -> Cron:
    sched = _nightly(path)["schedules"][0]
    return Cron(sched["cron"], timezone=sched.get("timezone"))


def nightly_parameters(path: Path = ROOT / "prefect.yaml", gpu_deployment: str | None = None) -> dict:
    """The deployment's parameters from prefect.yaml; `gpu_deployment`, when given, wins."""
    params = dict(_nightly(path).get("parameters") or {})
    if gpu_deployment:
        params["gpu_deployment"] = gpu_deployment
    return params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--gpu-deployment", default=os.environ.get("BERTOPS_GPU_DEPLOYMENT"),
                    help="send the training stages to this deployment, e.g. bertops-stage/gpu")
    args = ap.parse_args(argv)
    pipeline.serve(name="nightly-retrain", schedule=nightly_schedule(),
                   parameters=nightly_parameters(gpu_deployment=args.gpu_deployment))


if __name__ == "__main__":
    main()
