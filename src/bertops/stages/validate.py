"""Stage `validate`: check every file under data/ before anything is trained on it.

Writes artifacts/validation/summary.json (DVC metrics) and report.html (self-contained page), logs
both and the headline counts to MLflow, then, if any rule failed, raises DataError naming the first
failing file, record and rule: the CLI exits non-zero and nothing downstream runs. The outputs are
written before raising so people can see why.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from bertops import tracking
from bertops.config import Params
from bertops.errors import DataError
from bertops.io import write_json, write_text

_METRIC_KEY_UNSAFE = re.compile(r"[^/\w.\- :]")  # what MLflow accepts in a metric name


def _metrics(summary: dict, seconds: float) -> dict:
    def safe(key: str) -> str:
        return _METRIC_KEY_UNSAFE.sub("_", key)

    metrics: dict = {k: summary[k] for k in ("files", "files_failed", "records", "failures")}
    metrics["success"] = int(summary["success"])
    metrics["seconds"] = seconds
    metrics["rules_failed"] = {safe(rule): agg["failed"] for rule, agg in summary["rules"].items()}
    for key, entry in summary["per_file"].items():
        metrics[safe(key)] = {"records": entry["records"], "failures": entry["failures"]}
        for label, n in (entry.get("class_balance") or {}).items():
            metrics[safe(key)][safe(f"class.{label}")] = n
    return metrics


def main(params: Params) -> dict:
    from rich.console import Console

    from bertops.config_tasks import check_tasks
    from bertops.validation.report import render_report
    from bertops.validation.runner import validate_data

    check_tasks(params)  # each task's type and the fields it needs, before any file is read
    vp = params.validate_
    out_dir = Path(vp.out_dir)
    console = Console(stderr=True)

    def on_file(report) -> None:
        status = "[green]ok[/green]" if report.success else f"[red]{report.n_failures} failures[/red]"
        console.print(f"validate {report.key}: {report.records} records, {status}", highlight=False)

    with tracking.stage_run("validate", {"validate": vp.model_dump(), "data_dir": params.data.dir}):
        start = time.perf_counter()
        result = validate_data(params, on_file=on_file)
        seconds = time.perf_counter() - start
        summary = result.summary()
        summary_path = write_json(out_dir / "summary.json", summary)
        report_path = write_text(out_dir / "report.html", render_report(result, vp.report_examples_per_rule))
        tracking.log_metrics(_metrics(summary, seconds))
        tracking.log_artifact(summary_path, "validation")
        tracking.log_artifact(report_path, "validation")
        for note in result.notes:
            console.print(f"validate: note: {note}", highlight=False)
        if not result.success:
            first = result.first_failure()
            others = result.n_failures - 1
            more = f" (+{others} other failure{'s' if others != 1 else ''}; see {report_path})"
            raise DataError(first.file, first.record, first.rule, first.detail + more)
    return {"success": True, "files": summary["files"], "records": summary["records"],
            "seconds": round(seconds, 2), "summary": str(summary_path), "report": str(report_path)}
