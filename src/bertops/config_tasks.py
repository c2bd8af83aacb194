"""Check the declared tasks against the task-type registry: each task's `type` must be a known task
type, and the type says which fields it needs (`TaskType.check_params`).

This lives outside bertops.config on purpose: loading parameters does not import the registry
(bertops.model.multitask.task_types), so a stage that never reads a task (tokenize, pretrain)
does not depend on the task types' code, and editing a task head does not rerun it (dvc.yaml deps,
tests/unit/test_dvc_deps.py). Everything that uses tasks calls `check_tasks` before any work: the
validate, finetune, evaluate and register stages, `bertops run` and `bertops data fetch`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bertops.errors import BertopsError

if TYPE_CHECKING:
    from bertops.config import Params


def check_tasks(params: Params) -> Params:
    """`params` when every task under `tasks:` is declared right; else a BertopsError that names
    each wrong task (`tasks.NAME...`) and what is wrong with it."""
    from bertops.model.multitask.task_types import TASK_TYPES

    problems = []
    for name, task in params.tasks.items():
        task_type = TASK_TYPES.get(task.type)
        if task_type is None:
            problems.append(f"tasks.{name}.type: unknown task type {task.type!r}; "
                            f"known: {', '.join(sorted(TASK_TYPES))}")
        elif problem := task_type.check_params(task):
            problems.append(f"tasks.{name}: {problem}")
    if problems:
        raise BertopsError("\n".join(problems))
    return params
