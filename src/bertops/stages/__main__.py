"""Run one pipeline stage: what dvc.yaml's commands call.

    python -m bertops.stages NAME [-S key=value ...] [--params FILE]

`bertops stage NAME` (bertops.cli) is the same, for people. This module holds only what running a
stage needs: the offline settings, the orchestrator watch (bertops.lifeline), loading the
parameters, the stage itself (bertops.stages.NAME), its headline numbers
(bertops.stages.headline.NAME, written to metrics/NAME.json) and the errors meant for people
(`bertops: error: ...`, exit status 2). The rest of the CLI is not imported, so dvc.yaml does not
list it and editing another command reruns no stage (tests/unit/test_dvc_deps.py walks the imports
from here).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertops.env import apply_offline_env, is_global_zero
from bertops.errors import BertopsError

RESTORE_ONLY_ENV = "BERTOPS_RESTORE_ONLY"  # a stage that must come from DVC's run cache, never run here
STAGES = ("validate", "tokenize", "pretrain", "finetune", "distill", "evaluate", "register")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`-S KEY=VALUE` pairs as {dotted key: YAML value}."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BertopsError(f"override {pair!r} is not KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def run_stage(name: str, params_file: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> dict:
    """Run stage `name` with the parameters of `params_file` (plus dotted overrides), then write its
    headline numbers to metrics/NAME.json next to the params file (the project root)."""
    if name not in STAGES:
        raise BertopsError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    if os.environ.get(RESTORE_ONLY_ENV) == name:  # set by flows/worker.py on the orchestrator
        raise BertopsError(f"stage {name!r} ran on a worker, and DVC should have restored it here from the run "
                           "cache, but it would run it again: this workspace's code, inputs or parameters "
                           "differ from the worker's checkout (uncommitted or unpushed changes?)")
    from bertops.lifeline import watch_orchestrator

    watch_orchestrator()  # under `bertops run`: stop (checkpointing) if the orchestrator dies
    from bertops.config import load_params
    from bertops.stages import headline

    params = load_params(params_file, overrides)
    # by name: tests/unit/test_dvc_deps.py counts bertops.stages.NAME as this command's code
    result = importlib.import_module(f"bertops.stages.{name}").main(params)
    if is_global_zero():  # a DDP stage's other ranks return before rank 0 has written the detail
        headline.write(name, params, root=Path(params_file).parent)
    return result


def stage_command(args: argparse.Namespace) -> int:
    """Run stage args.name with args.params and the -S pairs args.set; print its result as JSON
    (`bertops stage NAME` and `python -m bertops.stages NAME` both)."""
    result = run_stage(args.name, args.params, parse_overrides(args.set or []))
    print(json.dumps(result, indent=2, default=str))
    return 0


def report_user_errors(command: Callable[[], int], params_file: str | Path | None = None) -> int:
    """Run `command`; an error meant for people (BertopsError, or parameters that do not fit the
    typed config) is printed as one `bertops: error: ...` message, without a traceback, and gives
    exit status 2. The Prefect flow tells such failures from crashes by that prefix."""
    from pydantic import ValidationError

    try:
        return command()
    except BertopsError as e:
        print(f"bertops: error: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:  # params.yaml or a -S override does not fit the typed config
        print(f"bertops: error: {params_file or 'params.yaml'}: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    apply_offline_env()
    p = argparse.ArgumentParser(prog="python -m bertops.stages", description="Run one pipeline stage "
                                "(what dvc.yaml calls; `bertops stage NAME` is the same).")
    p.add_argument("name", choices=STAGES)
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter, e.g. -S pretrain.max_steps=50")
    args = p.parse_args(argv)
    return report_user_errors(lambda: stage_command(args), args.params)


if __name__ == "__main__":
    sys.exit(main())
