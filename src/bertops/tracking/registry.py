"""MLflow model registry: lineage tags, model card, and the promotion gate.

A new version gets the alias `champion` only if its gate metric beats the current champion's by
more than `threshold`; otherwise it gets `challenger` and a tag saying why. The gate value of each
version is stored as the tag `bertops.gate_value`, so the comparison needs nothing but the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

CHAMPION, CHALLENGER = "champion", "challenger"
GATE_TAG = "bertops.gate_value"


# Tracked files the pipeline itself rewrites (DVC's lock file, the metrics DVC tracks): a run changes
# them before register reads git's state, so they do not make the code "-dirty" (params.yaml does:
# its hash is a tag of its own, but an edit not committed is still a change to the run's inputs).
# flows/worker.py's RUN_FILES builds on it.
PIPELINE_OUTPUTS = ("dvc.lock", "metrics/")


def _git_commit(cwd: Path) -> str:
    """HEAD's sha, with "-dirty" when a tracked file other than PIPELINE_OUTPUTS differs from it."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        exclude = [f":(exclude,top){p}" for p in PIPELINE_OUTPUTS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *exclude],
                               cwd=cwd, capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def params_hash(params_tree: dict) -> str:
    canonical = json.dumps(params_tree, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def data_hash(root: Path) -> str:
    """The md5 DVC recorded for data/ in data.dvc (what `dvc pull` would restore)."""
    path = root / "data.dvc"
    if not path.exists():
        return "untracked"
    outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", "unknown"))


def stage_hashes(root: Path) -> dict[str, str]:
    """Per-stage hash of the outputs recorded in dvc.lock (empty when run outside DVC)."""
    path = root / "dvc.lock"
    if not path.exists():
        return {}
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {})
    out = {}
    for name, stage in stages.items():
        md5s = sorted(f"{o['path']}:{o.get('md5', '')}" for o in stage.get("outs", []))
        out[name] = hashlib.sha256("|".join(md5s).encode()).hexdigest()[:12]
    return out


def lineage_tags(root: Path, params_tree: dict, validation_ok: bool) -> dict[str, str]:
    tags = {
        "bertops.git_commit": _git_commit(root),
        "bertops.data_md5": data_hash(root),
        "bertops.params_hash": params_hash(params_tree),
        "bertops.validation": "passed" if validation_ok else "failed",
        "bertops.prefect_flow_run_id": os.environ.get("BERTOPS_FLOW_RUN_ID", "none"),
    }
    for stage, digest in stage_hashes(root).items():
        tags[f"bertops.stage.{stage}"] = digest
    return tags


def get_dotted(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(dotted)
        node = node[key]
    if isinstance(node, dict) and "mean" in node:  # metrics reported as mean +/- std over seeds
        node = node["mean"]
    return float(node)


def decide_promotion(new_value: float, champion_value: float | None, threshold: float) -> tuple[str, str]:
    """Return (alias, reason). A model is promoted only if strictly better by the threshold."""
    if champion_value is None:
        return CHAMPION, f"first model: no champion yet (gate value {new_value:.4f})"
    if new_value > champion_value + threshold:
        return CHAMPION, f"gate value {new_value:.4f} beats champion {champion_value:.4f} by more than {threshold}"
    return CHALLENGER, (f"gate value {new_value:.4f} does not beat champion {champion_value:.4f} "
                        f"by more than {threshold}")


def current_champion(client, name: str):
    """The version holding the champion alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def gate_value(value: float) -> float:
    """A gate value as the registry stores it (the tag, 6 decimals). Both sides of the comparison
    use this form: a model equal to the champion must compare equal, not win by a rounding digit
    (0.4583334 read back from its tag is 0.458333)."""
    return float(f"{float(value):.6f}")


def apply_gate(client, name: str, version: str, new_value: float, threshold: float) -> dict:
    """Tag the version with its gate value and give it champion or challenger (strictly better by
    more than `threshold` is required: a model equal to the champion stays challenger)."""
    new_value = gate_value(new_value)
    champion = current_champion(client, name)
    champion_value = (gate_value(champion.tags[GATE_TAG]) if champion is not None and GATE_TAG in champion.tags
                      else None)
    if champion is not None and champion_value is None:
        champion_value = float("-inf")  # a champion without a gate value can be replaced
    alias, reason = decide_promotion(new_value, champion_value, threshold)
    client.set_model_version_tag(name, version, GATE_TAG, f"{new_value:.6f}")
    client.set_model_version_tag(name, version, "bertops.gate_decision", alias)
    client.set_model_version_tag(name, version, "bertops.gate_reason", reason)
    client.set_registered_model_alias(name, alias, version)
    return {"alias": alias, "reason": reason,
            "previous_champion": champion.version if champion is not None else None}


def model_card(params_tree: dict, tags: dict, eval_report: str, gate: dict) -> str:
    tasks = ", ".join(sorted(params_tree.get("tasks", {})))
    model = params_tree.get("model", {})
    lines = [
        "# bertops multi-task BERT",
        "",
        f"**Gate:** {gate['alias']} — {gate['reason']}",
        "",
        "## Data",
        f"- data.dvc md5: `{tags.get('bertops.data_md5')}`; validation: {tags.get('bertops.validation')}",
        f"- tasks: {tasks}",
        "",
        "## Parameters",
        f"- model: `{json.dumps(model, sort_keys=True)}`",
        f"- params hash: `{tags.get('bertops.params_hash')}`; git commit: `{tags.get('bertops.git_commit')}`",
        "",
        "## Evaluation (test split)",
        "",
        eval_report.strip() or "_no evaluation report_",
        "",
    ]
    return "\n".join(lines)
