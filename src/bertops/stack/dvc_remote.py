"""Point a DVC repository at the stack's S3 remote (SeaweedFS), with DVC's own commands.

The URL and endpoint go to `.dvc/config` when `shared` (a team's committed setting), otherwise to
`.dvc/config.local` like the keys, which always go there (`dvc remote modify --local`).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from bertops.stack.proc import StackError

REMOTE_NAME = "storage"
REMOTE_KEYS = ("BERTOPS_DVC_REMOTE_URL", "BERTOPS_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _dvc(repo: Path, *args: str) -> None:
    dvc = str(Path(sys.executable).with_name("dvc"))
    out = subprocess.run([dvc, *args], cwd=repo, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise StackError(f"dvc {' '.join(args[:3])} failed in {repo}: {out.stderr.strip()[-2000:]}")


def configure_dvc_remote(repo: Path | str, env: Mapping[str, str], name: str = REMOTE_NAME,
                         default: bool = True, shared: bool = False) -> str:
    """Add (or replace) remote `name` = the stack's bucket, from a stack.env mapping (load_env)."""
    repo = Path(repo)
    where = [] if shared else ["--local"]
    _dvc(repo, "remote", "add", *where, "--force", *(["--default"] if default else []), name,
         env["BERTOPS_DVC_REMOTE_URL"])
    _dvc(repo, "remote", "modify", *where, name, "endpointurl", env["BERTOPS_S3_ENDPOINT_URL"])
    _dvc(repo, "remote", "modify", "--local", name, "access_key_id", env["AWS_ACCESS_KEY_ID"])
    _dvc(repo, "remote", "modify", "--local", name, "secret_access_key", env["AWS_SECRET_ACCESS_KEY"])
    _dvc(repo, "remote", "modify", *where, name, "region", env.get("AWS_DEFAULT_REGION", "us-east-1"))
    return name
