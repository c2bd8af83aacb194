"""Typed view of params.yaml: the only place parameters are read.

Each stage takes the section it needs. `load_params(overrides={"pretrain.max_steps": 10})`
applies dotted-key overrides (what Prefect flow parameters and `dvc exp run -S` both are).
Unknown keys are errors, so a typo in params.yaml fails loudly instead of being ignored.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

TaskType = Literal[
    "sequence_classification", "pair_classification", "token_classification", "extractive_qa"
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataParams(_Section):
    dir: str = "data"
    corpus_sources: list[str] = Field(default_factory=list)
    validation_fraction: float = 0.1
    test_fraction: float = 0.1


class TaskParams(_Section):
    """One downstream task. Fields by type follow the Hugging Face dataset conventions."""

    type: TaskType
    path: str | None = None  # directory with {train,validation,test}.jsonl
    dataset: str | None = None  # a `datasets` name, for users who are online
    dataset_config: str | None = None
    text_fields: list[str] = Field(default_factory=list)  # 1 (single) or 2 (pair) fields
    tokens_field: str = "tokens"
    label_field: str = "label"
    labels: list[str | bool | int] = Field(default_factory=list)
    metric: str = "accuracy"
    max_seq_length: int = 128
    doc_stride: int = 64
    max_answer_length: int = 30
    loss_weight: float = 1.0

    @model_validator(mode="after")
    def _check_type_fields(self) -> "TaskParams":
        if self.path is None and self.dataset is None:
            raise ValueError("a task needs `path` (local files) or `dataset` (a datasets name)")
        n_text = {"sequence_classification": 1, "pair_classification": 2}.get(self.type)
        if n_text is not None and len(self.text_fields) != n_text:
            raise ValueError(f"{self.type} needs exactly {n_text} text_fields")
        if self.type != "extractive_qa" and not self.labels:
            raise ValueError(f"{self.type} needs a `labels` list")
        return self


class ValidateParams(_Section):
    out_dir: str = "artifacts/validation"
    corpus_min_chars: int = 100
    corpus_max_chars: int = 5_000_000
    corpus_min_sentences: int = 2
    max_duplicate_documents: int = 0


class Params(_Section):
    seed: int = 1234
    data: DataParams = Field(default_factory=DataParams)
    tasks: dict[str, TaskParams] = Field(default_factory=dict)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


def _apply_override(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise KeyError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def load_params_dict(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> dict:
    with open(path, encoding="utf-8") as f:
        tree = yaml.safe_load(f) or {}
    tree = copy.deepcopy(tree)
    for key, value in (overrides or {}).items():
        _apply_override(tree, key, value)
    return tree


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    return Params.model_validate(load_params_dict(path, overrides))
