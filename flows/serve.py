"""Serve the nightly retraining schedule from this machine, without a work pool:

    python -m flows.serve          # registers deployment `bertops-pipeline/nightly-retrain`, runs on schedule

The cron and time zone come from prefect.yaml, so there is one schedule definition.
Stop with Ctrl-C (SIGTERM) before stopping the Prefect server.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.schedules import Cron

from flows.pipeline import pipeline

ROOT = Path(__file__).resolve().parents[1]


def nightly_schedule(path: Path = ROOT / "prefect.yaml") -> Cron:
    spec = yaml.safe_load(path.read_text())
    deployment = next(d for d in spec["deployments"] if d["name"] == "nightly-retrain")
    sched = deployment["schedules"][0]
    return Cron(sched["cron"], timezone=sched.get("timezone"))


if __name__ == "__main__":
    pipeline.serve(name="nightly-retrain", schedule=nightly_schedule())
