"""`bertops champion-diff`: this workspace's model against the registered champion.

What CI (and a person) wants to know before the register stage decides: how does the model just
trained compare with `models:/<register.model_name>@champion` on the tracking server, and what changed
between them. It reads only the registry (no artifact download):
- the gate metric: this workspace's `register.gate_metrics_file` / `register.gate_metric` against the
  champion version's `bertops.gate_value` tag (what the register stage compares), and the decision the
  register stage's gate would make (registry.decide_promotion with `register.threshold`);
- the test score (metrics/evaluate.json `test_score`) against the champion pipeline's evaluate run
  (the sibling, under the same parent run, of the run that registered it; shown when there is one);
- the lineage: git commit, data md5, params hash and each stage's output hash from dvc.lock, against
  the champion's lineage tags (registry.lineage_tags), marked same or changed.

No champion yet (no such registered model, or no version holds the alias) is not an error: it says
so, and that the model would become the first champion. Exit status is non-zero only on an error: the
tracking server unreachable or refusing the credentials, or this workspace's gate metric missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertops.errors import BertopsError

EVALUATE_HEADLINE = Path("metrics/evaluate.json")  # test_score: the evaluate stage's headline
EVALUATE_RUN_METRIC = "mean_score"  # the same number, as the evaluate stage logs it to MLflow


@dataclass
class Comparison:
    model_name: str
    gate_metric: str
    new_gate: float
    threshold: float
    champion_version: str | None = None
    champion_gate: float | None = None
    decision: str = ""
    reason: str = ""
    new_test: float | None = None
    champion_test: float | None = None
    lineage: list[tuple[str, str, str | None]] = field(default_factory=list)  # (what, new, champion)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["lineage"] = [{"what": w, "new": n, "champion": c} for w, n, c in self.lineage]
        return d


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _diff(new: float | None, old: float | None) -> str:
    return "n/a" if new is None or old is None else f"{new - old:+.4f}"


def to_markdown(c: Comparison, uri: str) -> str:
    champ = f"champion (version {c.champion_version})" if c.champion_version else "champion"
    lines = [f"## {c.model_name}: this run vs `models:/{c.model_name}@champion`", "",
             f"Tracking server: `{uri}`", ""]
    if c.champion_version is None:
        lines += [f"**No champion yet**: {c.note}", "",
                  f"This run's gate value ({c.gate_metric}): {_fmt(c.new_gate)}.", ""]
    lines += [f"| metric | this run | {champ} | difference |", "|---|---|---|---|",
              f"| {c.gate_metric} (the gate) | {_fmt(c.new_gate)} | {_fmt(c.champion_gate)} | "
              f"{_diff(c.new_gate, c.champion_gate)} |",
              f"| test_score (evaluate) | {_fmt(c.new_test)} | {_fmt(c.champion_test)} | "
              f"{_diff(c.new_test, c.champion_test)} |", "",
              f"**Gate if registered:** {c.decision} ({c.reason}).", ""]
    if c.champion_version is not None and c.note:
        lines += [f"Note: {c.note}", ""]
    if c.lineage:
        lines += [f"| lineage | this run | {champ} | |", "|---|---|---|---|"]
        for what, new, old in c.lineage:
            same = "" if old is None else ("same" if new == old else "**changed**")
            lines.append(f"| {what} | `{new}` | `{old if old is not None else 'n/a'}` | {same} |")
        lines.append("")
    return "\n".join(lines)


def _champion_test_score(client, version) -> float | None:
    """The evaluate stage's score of the pipeline run that registered `version`: the evaluate run
    under the same parent run as the register run (None when it ran outside a pipeline flow)."""
    run = client.get_run(version.run_id) if version.run_id else None
    parent = run.data.tags.get("mlflow.parentRunId") if run is not None else None
    if not parent:
        return None
    query = f"tags.mlflow.parentRunId = '{parent}' and tags.`bertops.stage` = 'evaluate'"
    found = client.search_runs([run.info.experiment_id], filter_string=query, max_results=5)
    for r in found:
        if EVALUATE_RUN_METRIC in r.data.metrics:
            return float(r.data.metrics[EVALUATE_RUN_METRIC])
    return None


def compare(params, root: Path | str = ".", client=None) -> Comparison:
    """This workspace (root) against the registry's champion of params.register_.model_name."""
    from bertops.config import load_params_dict
    from bertops.tracking import registry

    root, cfg = Path(root), params.register_
    gate_file = root / cfg.gate_metrics_file
    try:
        new_gate = registry.gate_value(registry.get_dotted(json.loads(gate_file.read_text()), cfg.gate_metric))
    except FileNotFoundError:
        raise BertopsError(f"champion-diff: {gate_file} is missing: train and evaluate first "
                           f"(e.g. `dvc repro evaluate`)") from None
    except KeyError:
        raise BertopsError(f"champion-diff: gate metric {cfg.gate_metric!r} not found in {gate_file}") from None
    headline = root / EVALUATE_HEADLINE
    new_test = json.loads(headline.read_text()).get("test_score") if headline.exists() else None
    params_tree = load_params_dict(root / "params.yaml") if (root / "params.yaml").exists() else {}
    tags = registry.lineage_tags(root, params_tree, validation_ok=True)
    c = Comparison(cfg.model_name, cfg.gate_metric, new_gate, cfg.threshold, new_test=new_test)

    client = client or _client()
    found = client.search_registered_models(filter_string=f"name = '{cfg.model_name}'")
    aliases = found[0].aliases if found else {}
    version = aliases.get(registry.CHAMPION) if isinstance(aliases, dict) else None
    if version is None:
        c.note = (f"no registered model {cfg.model_name!r}" if not found else
                  f"no version of {cfg.model_name!r} holds the alias {registry.CHAMPION!r}")
        c.decision, c.reason = registry.decide_promotion(new_gate, None, cfg.threshold)
        c.lineage = [(k.removeprefix("bertops."), v, None) for k, v in tags.items() if _lineage_key(k)]
        return c
    mv = client.get_model_version(cfg.model_name, str(version))
    c.champion_version = str(mv.version)
    old = mv.tags or {}
    if registry.GATE_TAG in old:
        c.champion_gate = registry.gate_value(old[registry.GATE_TAG])
    c.decision, c.reason = registry.decide_promotion(
        new_gate, c.champion_gate if c.champion_gate is not None else float("-inf"), cfg.threshold)
    c.champion_test = _champion_test_score(client, mv)
    c.lineage = [(k.removeprefix("bertops."), v, old.get(k)) for k, v in tags.items() if _lineage_key(k)]
    c.lineage += [(k.removeprefix("bertops."), "n/a", v) for k, v in sorted(old.items())
                  if _lineage_key(k) and k not in tags]
    finetune = "bertops.stage.finetune"
    if finetune in tags and tags[finetune] == old.get(finetune):
        c.note = (f"the champion (version {c.champion_version}) was registered from the same fine-tuned model "
                  f"as this workspace's (stage finetune outputs {tags[finetune]}): it may be this run's own")
    return c


def _lineage_key(tag: str) -> bool:
    return tag in ("bertops.git_commit", "bertops.data_md5", "bertops.params_hash") or tag.startswith(
        "bertops.stage.")


def _redacted(text: str) -> str:
    """`text` (a URI, an error message quoting one) without URI passwords: the table and the errors may
    go to a CI summary or log that anyone with read access sees."""
    import re

    return re.sub(r"(://[^:/@\s]+:)[^@\s/]+@", r"\1***@", text)


def _client():
    import mlflow

    from bertops.tracking import tracking_uri

    return mlflow.MlflowClient(tracking_uri=tracking_uri())


def main(params, root: Path | str = ".", markdown: str | None = None, json_out: str | None = None) -> int:
    """Print the comparison (markdown); also write it to `markdown` (append: $GITHUB_STEP_SUMMARY)
    and as JSON to `json_out`. Errors from the tracking server become a BertopsError naming it."""
    from mlflow.exceptions import MlflowException

    from bertops.tracking import tracking_uri

    uri = _redacted(tracking_uri())
    try:
        c = compare(params, root)
    except MlflowException as e:
        raise BertopsError(f"champion-diff: the tracking server {uri} refused or failed: {_redacted(e.message)[:500]}. "
                           f"Check MLFLOW_TRACKING_URI and MLFLOW_TRACKING_USERNAME/PASSWORD") from None
    except OSError as e:  # connection refused, DNS: requests' errors are OSErrors
        raise BertopsError(f"champion-diff: cannot reach the tracking server {uri}: {_redacted(str(e))}") from None
    text = to_markdown(c, uri)
    print(text)
    if markdown:
        with open(markdown, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    if json_out:
        Path(json_out).write_text(json.dumps({**c.as_dict(), "tracking_uri": uri}, indent=2) + "\n")
    return 0
