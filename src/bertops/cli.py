"""The `bertops` command line. Heavy libraries are imported inside each command, not here,
so `bertops --help` stays instant.

    bertops data fetch                 build data/ from the pinned real sources
    bertops stage NAME [-S key=value]  run one pipeline stage (= python -m bertops.stages NAME, what dvc.yaml calls)
    bertops predict MODEL_DIR TASK ... print predictions of a fine-tuned model
    bertops run                        run the whole pipeline as a Prefect flow
    bertops serve [--model-uri URI]    serve the registered champion over HTTP (MLflow scoring server)
    bertops champion-diff              this workspace's model vs the registry's champion (gate metric, lineage)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bertops.env import apply_offline_env
from bertops.errors import BertopsError

# `bertops stage NAME` is `python -m bertops.stages NAME` (what dvc.yaml calls): that small module
# runs a stage without the rest of this CLI, so no stage depends on the other commands' code.
from bertops.stages.__main__ import STAGES, report_user_errors, stage_command
from bertops.stages.__main__ import parse_overrides as _parse_overrides


def _load(args):
    from bertops.config import load_params

    return load_params(args.params, _parse_overrides(args.set or []))


def _cmd_data(args) -> int:
    from bertops.config_tasks import check_tasks
    from bertops.data import fetch

    result = fetch.main(check_tasks(_load(args)), force=args.force)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_predict(args) -> int:
    from bertops.stages import predict

    return predict.main(args)


PROJECT_MARKERS = ("dvc.yaml", "flows/pipeline.py")


def find_project_root(start: str | Path | None = None) -> Path | None:
    """The nearest directory at or above `start` (default: the working directory) that holds
    dvc.yaml and flows/pipeline.py, i.e. a bertops project; None when there is none."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if all((d / m).is_file() for m in PROJECT_MARKERS):
            return d
    return None


def _no_project_message(cwd: Path) -> str:
    msg = (f"`bertops run` needs a bertops project (a directory with {' and '.join(PROJECT_MARKERS)}); "
           f"there is none at or above {cwd}")
    installed_from = find_project_root(Path(__file__).parent)  # an editable install of a checkout
    if installed_from is not None:
        msg += f". Run it in {installed_from} (or any directory under it)"
    return msg


def _project_params(root: Path, given: str | None) -> Path:
    """The project's params.yaml. DVC reads that file (dvc.yaml `params:`), so a run with any other
    parameters file would record and skip stages by the wrong values: refused, not ignored."""
    params = root / "params.yaml"
    if given is not None and not (Path(given).exists() and Path(given).resolve() == params.resolve()):
        raise BertopsError(
            f"bertops run: --params {given}: the pipeline runs through DVC, which reads {params} only; "
            f"edit that file, or override keys with -S KEY=VALUE (e.g. -S pretrain.max_steps=50)")
    return params


def _cmd_champion_diff(args) -> int:
    from bertops.tracking import champion

    return champion.main(_load(args), Path(args.params).resolve().parent, markdown=args.markdown,
                         json_out=args.json)


def _cmd_run(args) -> int:
    root = find_project_root()
    if root is None:
        raise BertopsError(_no_project_message(Path.cwd()))
    params_file = _project_params(root, args.params)
    overrides = _parse_overrides(args.set or [])
    from bertops.config import load_params
    from bertops.config_tasks import check_tasks

    check_tasks(load_params(params_file, overrides))  # bad parameters or tasks: refused before any stage
    os.chdir(root)  # stages, dvc and the tracking store all work relative to the project root
    sys.path.insert(0, str(root))
    from flows.pipeline import StageFailed, pipeline

    try:
        pipeline(overrides=overrides)
    except StageFailed as e:  # the stage already printed its own message; end without a traceback
        print(f"bertops: error: pipeline stopped at stage {e.stage!r}; nothing after it ran", file=sys.stderr)
        return 1
    return 0


def serve_command(args) -> tuple[list[str], dict[str, str]]:
    """The MLflow scoring server's command line and environment. MLflow starts `uvicorn` from
    PATH, so this interpreter's bin directory goes first: `bertops serve` works without an
    activated virtualenv (as the flow does for dvc)."""
    from bertops.tracking import tracking_uri

    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    env.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    mlflow_bin = shutil.which("mlflow", path=bin_dir) or shutil.which("mlflow", path=env["PATH"]) or "mlflow"
    cmd = [mlflow_bin, "models", "serve", "-m", args.model_uri, "--env-manager", "local",
           "--host", args.host, "--port", str(args.port), "--workers", "1"]
    return cmd, env


@contextlib.contextmanager
def scoring_server(model_uri: str, env: dict[str, str] | None = None, log=None,
                   timeout: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """`bertops serve`'s scoring server for model_uri on a free loopback port, started here and
    stopped on exit (its whole process group: mlflow's CLI and the uvicorn it starts): yields (base
    url, process) once GET /ping answers. env: variables added to the server's environment; log: an
    open file for its output (default: discarded). A server that exits or does not answer within
    `timeout` s raises BertopsError."""
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd, server_env = serve_command(argparse.Namespace(model_uri=model_uri, host="127.0.0.1", port=port))
    out = log if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env={**server_env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BertopsError(f"the scoring server for {model_uri} exited with {proc.returncode} "
                                   "before answering")
            if time.monotonic() > deadline:
                raise BertopsError(f"the scoring server for {model_uri} did not answer {url}/ping in {timeout:g} s")
            try:
                with urllib.request.urlopen(url + "/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _cmd_serve(args) -> int:
    # The MLflow scoring server: POST /invocations with {"dataframe_split": ...}; GET /ping.
    cmd, env = serve_command(args)
    os.execvpe(cmd[0], cmd, env)  # searches env's PATH when mlflow is not in this venv
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bertops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
        sp.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                        help="override a parameter, e.g. -S pretrain.max_steps=50")

    d = sub.add_parser("data", help="built-in data")
    d.add_argument("action", choices=["fetch"])
    d.add_argument("--force", action="store_true", help="rebuild even if data/ is up to date")
    common(d)
    d.set_defaults(func=_cmd_data)

    s = sub.add_parser("stage", help="run one pipeline stage")
    s.add_argument("name", choices=STAGES)
    common(s)
    # stage_command also writes metrics/NAME.json next to the params file, what `dvc exp show` compares
    s.set_defaults(func=stage_command)

    pr = sub.add_parser("predict", help="predict with a fine-tuned model")
    pr.add_argument("model_dir")
    pr.add_argument("task")
    pr.add_argument("inputs", nargs="*", help="texts; for pairs 'A|||B'; for QA 'question|||context'; "
                                               "or none to read JSON lines from stdin")
    pr.set_defaults(func=_cmd_predict)

    sv = sub.add_parser("serve", help="serve a registered model over HTTP on loopback")
    sv.add_argument("--model-uri", default="models:/bertops@champion")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=5001)
    sv.set_defaults(func=_cmd_serve)

    cd = sub.add_parser("champion-diff", help="compare this workspace's model with models:/NAME@champion on "
                                              "the tracking server (exit non-zero only on an error)")
    common(cd)
    cd.add_argument("--markdown", metavar="FILE", help="also append the table to FILE (e.g. $GITHUB_STEP_SUMMARY)")
    cd.add_argument("--json", metavar="FILE", help="also write the comparison as JSON to FILE")
    cd.set_defaults(func=_cmd_champion_diff)

    r = sub.add_parser("run", help="run the whole pipeline as a Prefect flow, in the project at or above "
                                   "the working directory")
    common(r)
    r.set_defaults(func=_cmd_run, params=None)  # None: the project's params.yaml (the only one DVC reads)
    return p


def main(argv: list[str] | None = None) -> int:
    apply_offline_env()
    args = build_parser().parse_args(argv)
    return report_user_errors(lambda: args.func(args), getattr(args, "params", None))


if __name__ == "__main__":
    sys.exit(main())
