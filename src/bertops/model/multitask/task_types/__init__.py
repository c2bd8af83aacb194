"""The task-type registry: every kind of task the multi-task model knows, keyed by type name.

    get_task_type("extractive_qa").metrics(pred, gold)
    TASK_TYPES  # {"extractive_qa": <task type extractive_qa>, ...}

Each module of this package whose name does not start with "_" defines one kind as
`TASK_TYPE = SomeType()` (a `TaskType` subclass, see _base.py) and is registered when this
package is imported, so a new kind of task is one new file here (plus its tests): params
validation (`tasks.<name>.type`), data checks, the model, metrics and baselines all ask this
registry. `register_task_type` adds one from elsewhere (tests, plugins).

Import cost: the standard library only; the modules import torch/seqeval inside the functions
that need them, so bertops.config can validate task types without loading torch.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._base import NOT_CHECKED, Column, RecordRule, TaskType

TASK_TYPES: dict[str, TaskType] = {}


def register_task_type(task_type: TaskType, replace: bool = False) -> TaskType:
    """Add a kind of task to the registry (by its `name`); returns it."""
    if not isinstance(task_type, TaskType) or not task_type.name:
        raise TypeError(f"{task_type!r} is not a named TaskType instance")
    if task_type.name in TASK_TYPES and not replace and TASK_TYPES[task_type.name] is not task_type:
        raise ValueError(f"task type {task_type.name!r} is already registered")
    TASK_TYPES[task_type.name] = task_type
    return task_type


def unregister_task_type(name: str) -> None:
    TASK_TYPES.pop(name, None)


def get_task_type(name: str) -> TaskType:
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown task type {name!r}; known: {', '.join(sorted(TASK_TYPES))}") from None


def _discover() -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if not module.startswith("_"):
            register_task_type(importlib.import_module(f"{__name__}.{module}").TASK_TYPE)


_discover()

__all__ = ["NOT_CHECKED", "TASK_TYPES", "Column", "RecordRule", "TaskType", "get_task_type",
           "register_task_type", "unregister_task_type"]
