"""Offline and no-telemetry settings every entry point applies before importing the stack."""

import os

OFFLINE_ENV = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "true",
}


def apply_offline_env() -> None:
    """Set the offline variables unless the user already chose a value."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def is_global_zero() -> bool:
    """False in the extra processes of a distributed run: torchrun's ranks (RANK), the processes
    Lightning's DDP launcher starts by re-running the command once per extra device (LOCAL_RANK),
    and the other nodes (NODE_RANK). Only rank 0 tracks and writes a stage's outputs."""
    return all(int(os.environ.get(k) or "0") == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))
