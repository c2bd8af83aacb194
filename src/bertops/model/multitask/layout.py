"""Where a fine-tuned model dir keeps each task's model: the dir itself (one multi-task model), or,
in finetune.mode single_task, one model per task under it, named in SINGLE_TASK_MANIFEST.

Here, in the served package, so that training, evaluation, `bertops predict` and the MLflow pyfunc
read the one layout the same way (standard library only).
"""

from __future__ import annotations

import json
from pathlib import Path

from .spec import BertopsError

# {"models": {task: sub-directory}}, written by bertops.train.finetune in single_task mode
SINGLE_TASK_MANIFEST = "single_task.json"


def single_task_dirs(model_dir: str | Path) -> dict[str, Path] | None:
    """{task: its own model dir} when model_dir holds single_task models; None for one multi-task model."""
    root = Path(model_dir)
    manifest = root / SINGLE_TASK_MANIFEST
    if not manifest.exists():
        return None
    return {task: root / sub for task, sub in json.loads(manifest.read_text(encoding="utf-8"))["models"].items()}


def task_model_dir(model_dir: str | Path, task: str) -> Path:
    """The model dir that serves `task`: model_dir itself, or that task's own single_task model."""
    dirs = single_task_dirs(model_dir)
    if dirs is None:
        return Path(model_dir)
    if task not in dirs:
        raise BertopsError(f"{model_dir}: no model for task {task!r} (single-task models: {sorted(dirs)})")
    return dirs[task]
