"""`python -m bertops.stack up|down|status|env|dvc-remote`: start and stop the stack (see README "Scale out")."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bertops.stack.dvc_remote import REMOTE_KEYS, configure_dvc_remote
from bertops.stack.launcher import DEFAULT_PORTS, DEFAULT_STATE_DIR, Stack, StackConfig, free_ports, load_env
from bertops.stack.proc import StackError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bertops.stack", description=__doc__)
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: .stack")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the stack (only what is not running); writes STATE_DIR/stack.env")
    up.add_argument("--bind", default="127.0.0.1", help="address the servers listen on (first up only)")
    up.add_argument("--advertise", default="", help="address clients use (default: the bind address)")
    up.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
    for name, port in DEFAULT_PORTS.items():
        up.add_argument(f"--{name.replace('_', '-')}-port", type=int, default=None, dest=f"port_{name}",
                        help=f"default {port}")
    up.add_argument("--mlflow-workers", type=int, default=2)
    up.add_argument("--timeout", type=float, default=120.0, help="seconds each service may take to be healthy")
    down = sub.add_parser("down", help="stop every service (data stays)")
    down.add_argument("--purge", action="store_true", help="also delete the state directory (all data)")
    sub.add_parser("status", help="which services run (exit 1 unless all do)")
    sub.add_parser("env", help="print the client environment (export lines)")
    dvc = sub.add_parser("dvc-remote", help="make the stack's S3 bucket a DVC remote of a repository")
    dvc.add_argument("--repo", type=Path, default=Path("."))
    dvc.add_argument("--name", default="storage")
    dvc.add_argument("--shared", action="store_true", help="URL and endpoint in .dvc/config (keys stay --local)")
    dvc.add_argument("--env-file", type=Path, default=None,
                     help="a copied stack.env (default: the environment when it holds the stack's variables, "
                          "else STATE_DIR/stack.env)")
    return p


def _remote_env(args) -> dict[str, str]:
    """The DVC remote's settings: --env-file, else the environment (a GPU host that sourced a copied
    stack.env), else the state directory's stack.env."""
    if args.env_file is not None:
        return load_env(args.env_file.parent, args.env_file.name)
    if all(os.environ.get(k) for k in REMOTE_KEYS):
        return {k: os.environ[k] for k in REMOTE_KEYS}
    return load_env(args.state_dir)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "up":
            ports = free_ports() if args.free_ports else dict(DEFAULT_PORTS)
            ports.update({n: getattr(args, f"port_{n}") for n in DEFAULT_PORTS if getattr(args, f"port_{n}")})
            config = StackConfig(bind=args.bind, advertise=args.advertise, ports=ports,
                                 mlflow_workers=args.mlflow_workers, timeout=args.timeout)
            Stack(args.state_dir, config).up()
        elif args.cmd == "down":
            Stack(args.state_dir).down(purge=args.purge)
        elif args.cmd == "status":
            status = Stack(args.state_dir).status()
            print(json.dumps(status, indent=2))
            return 0 if all(s["running"] for s in status.values()) else 1
        elif args.cmd == "env":
            print((args.state_dir / "stack.env").read_text(), end="")
        elif args.cmd == "dvc-remote":
            env = _remote_env(args)
            name = configure_dvc_remote(args.repo, env, name=args.name, shared=args.shared)
            print(f"DVC remote {name!r} -> {env['BERTOPS_DVC_REMOTE_URL']} at {env['BERTOPS_S3_ENDPOINT_URL']}")
    except StackError as exc:
        print(f"bertops stack: error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        if args.cmd not in ("env", "dvc-remote"):
            raise
        print(f"bertops stack: error: {exc.filename} not found (run `python -m bertops.stack up` first)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
