"""`register` stage: log the fine-tuned multi-task model and the pretrained encoder to MLflow,
register a new version with lineage tags and a model card, and apply the promotion gate. The
distill stage's student, when there is one, is registered the same way as its own model
(register.student_model_name), with its own gate and a card naming the version it was distilled from.

Nothing is registered when validation failed (the DVC graph already stops before this stage; the
check here guards direct calls too).
"""

from __future__ import annotations

import json
from pathlib import Path

from bertops.config import Params, load_params_dict
from bertops.errors import BertopsError
from bertops.io import write_json

FINETUNE_DIR = Path("artifacts/finetune/model")
PRETRAIN_DIR = Path("artifacts/pretrain/model")
EVAL_METRICS = Path("artifacts/evaluate/metrics.json")
EVAL_REPORT = Path("artifacts/evaluate/report.md")
VALIDATION = Path("artifacts/validation/summary.json")


def _input_example():
    import pandas as pd

    return pd.DataFrame([{"task": "sentiment", "text": "A warm, funny and clever film.", "text_pair": None}])


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema([ColSpec("string", "task"), ColSpec("string", "text"),
                     ColSpec("string", "text_pair", required=False)])
    outputs = Schema([ColSpec("string", "task"), ColSpec("string", "prediction"),
                      ColSpec("double", "score"), ColSpec("string", "detail")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _pip_requirements() -> list[str]:
    import importlib.metadata as md

    # peft: a finetune.mode adapters model loads each task's LoRA adapter with it
    return [f"{pkg}=={md.version(pkg)}" for pkg in ("torch", "transformers", "safetensors", "tokenizers",
                                                      "peft", "pandas", "mlflow")]


def multitask_model_kwargs(model_dir: Path) -> dict:
    """`mlflow.pyfunc.log_model`/`save_model` arguments for the multi-task model: model from code.

    `code_paths` is the bertops.model.multitask package directory, which MLflow copies (without
    __pycache__) and puts on sys.path, so the served model imports it as `multitask` and needs
    nothing else of bertops (tests/integration/test_served_model.py serves one with bertops blocked).
    """
    import bertops.model.multitask as multitask
    import bertops.tracking.pyfunc_model as pyfunc_model

    return dict(
        python_model=pyfunc_model.__file__,
        artifacts={"model_dir": str(model_dir)},
        code_paths=[str(Path(multitask.__file__).parent)],
        signature=_signature(),
        input_example=_input_example(),
        pip_requirements=_pip_requirements(),
    )


def log_multitask_model(model_dir: Path):
    """Log the multi-task model as an MLflow model from code (source + safetensors, no pickle)."""
    import mlflow

    return mlflow.pyfunc.log_model(name="model", **multitask_model_kwargs(model_dir))


def log_encoder(encoder_dir: Path):
    """Log the pretrained encoder as a transformers fill-mask model."""
    import mlflow
    from transformers import AutoTokenizer, BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(encoder_dir)
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    return mlflow.transformers.log_model(
        transformers_model={"model": model, "tokenizer": tokenizer},
        name="encoder",
        task="fill-mask",
        pip_requirements=_pip_requirements(),
    )


def register_student(params: Params, root: Path, client, tags: dict, report: str, params_tree: dict,
                     teacher_version: str) -> dict | None:
    """Log and register the distill stage's student (None when distill.out_dir has no model): the
    same pyfunc format, gate metric and threshold (against the student's own champion), lineage tags
    plus bertops.distilled_from, and a model card saying what it was distilled from."""
    import mlflow

    from bertops.tracking import registry

    cfg, out = params.register_, root / params.distill.out_dir
    if not (out / "model").is_dir():
        return None
    m = json.loads((out / "metrics.json").read_text())
    try:
        value = registry.get_dotted(m, cfg.gate_metric)
    except KeyError:
        raise BertopsError(f"register: gate metric {cfg.gate_metric!r} not found in {out / 'metrics.json'}") from None
    info = mlflow.pyfunc.log_model(name="student", **multitask_model_kwargs(out / "model"))
    try:
        client.get_registered_model(cfg.student_model_name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(cfg.student_model_name, description="Distilled by the bertops pipeline")
    origin = f"{cfg.model_name} version {teacher_version}"
    stags = {**tags, "bertops.distilled_from": origin, "bertops.teacher_dir": str(m["teacher_dir"])}
    version = mlflow.register_model(info.model_uri, cfg.student_model_name, tags=stags).version
    gate = registry.apply_gate(client, cfg.student_model_name, version, value, cfg.threshold)
    s = m["student"]
    card = registry.model_card(params_tree, stags, report, gate).replace(
        "# bertops multi-task BERT", f"# bertops distilled student\n\nDistilled from `{origin}` "
        f"({m['teacher_dir']}): {s['num_hidden_layers']} layers of {s['hidden_size']}, {s['encoder_params']:,} "
        f"encoder parameters against the teacher's {m['teacher_params']:,}; temperature {m['temperature']}, "
        f"alpha {m['alpha']} (soft-target weight).", 1)
    client.update_model_version(cfg.student_model_name, version, description=card)
    return {"model_name": cfg.student_model_name, "version": version, "gate_value": value, **gate}


def main(params: Params, root: Path | str = ".") -> dict:
    import mlflow
    from mlflow import MlflowClient

    from bertops import tracking
    from bertops.config_tasks import check_tasks
    from bertops.tracking import registry

    check_tasks(params)  # the model it registers answers these tasks
    root = Path(root)
    cfg = params.register_
    gate_file = Path(cfg.gate_metrics_file)
    for path in (VALIDATION, FINETUNE_DIR, EVAL_METRICS, gate_file):
        if not (root / path).exists():
            raise BertopsError(f"register: {path} is missing; run the stages before it first")
    validation = json.loads((root / VALIDATION).read_text())
    if not validation.get("success", False):
        raise BertopsError(f"register: data validation failed ({VALIDATION}); nothing is registered")
    try:
        gate_value = registry.get_dotted(json.loads((root / gate_file).read_text()), cfg.gate_metric)
    except KeyError:
        raise BertopsError(f"register: gate metric {cfg.gate_metric!r} not found in {gate_file}") from None

    if not tracking.enabled():
        raise BertopsError("register: MLflow tracking is off (BERTOPS_TRACKING=off); cannot register")
    params_tree = load_params_dict(root / "params.yaml") if (root / "params.yaml").exists() else {}
    tags = registry.lineage_tags(root, params_tree, validation_ok=True)
    report = (root / EVAL_REPORT).read_text() if (root / EVAL_REPORT).exists() else ""

    with tracking.stage_run("register", cfg.model_dump()) as run:
        mlflow.set_tags(tags)
        info = log_multitask_model(root / FINETUNE_DIR)
        encoder_info = log_encoder(root / PRETRAIN_DIR) if (root / PRETRAIN_DIR).exists() else None
        client = MlflowClient()
        for name in (cfg.model_name, cfg.encoder_model_name):
            try:
                client.get_registered_model(name)
            except mlflow.exceptions.MlflowException:
                client.create_registered_model(name, description="Registered by the bertops pipeline")
        version = mlflow.register_model(info.model_uri, cfg.model_name, tags=tags).version
        gate = registry.apply_gate(client, cfg.model_name, version, gate_value, cfg.threshold)
        client.update_model_version(cfg.model_name, version, description=registry.model_card(
            params_tree, tags, report, gate))
        encoder_version = None
        if encoder_info is not None:
            encoder_version = mlflow.register_model(
                encoder_info.model_uri, cfg.encoder_model_name,
                tags={**tags, "bertops.multitask_version": str(version)}).version
            # The encoder follows the multi-task model it was fine-tuned into.
            client.set_registered_model_alias(cfg.encoder_model_name, gate["alias"], encoder_version)
        student = register_student(params, root, client, tags, report, params_tree, version)
        mlflow.set_tags({"bertops.registered_version": version, "bertops.gate_decision": gate["alias"],
                         "bertops.gate_reason": gate["reason"]})
        result = {"model_name": cfg.model_name, "version": version, "encoder_version": encoder_version,
                  "gate_metric": cfg.gate_metric, "gate_value": gate_value, **gate,
                  "run_id": run.info.run_id, "tags": tags, "student": student}
    write_json(root / cfg.out_dir / "result.json", result)
    return result
