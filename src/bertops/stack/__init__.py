"""The multi-machine stack (issue 11), an ops module outside the pipeline's layers.

PostgreSQL (MLflow and Prefect backends), SeaweedFS (S3: MLflow artifacts, the DVC remote), an
MLflow tracking server with basic auth and proxied artifacts, a Prefect server with a `gpu` work
pool. `python -m bertops.stack up|down|status|dvc-remote` (or `make stack-up`/`make stack-down`);
`up` writes `.stack/stack.env`, the environment a client sources. Nothing else in bertops imports
this package: without stack.env sourced, the embedded defaults (SQLite, local folders) apply.
"""

from bertops.stack.dvc_remote import configure_dvc_remote
from bertops.stack.launcher import DEFAULT_PORTS, DEFAULT_STATE_DIR, Stack, StackConfig, free_ports, load_env
from bertops.stack.proc import StackError

__all__ = ["DEFAULT_PORTS", "DEFAULT_STATE_DIR", "Stack", "StackConfig", "StackError", "configure_dvc_remote",
           "free_ports", "load_env"]
