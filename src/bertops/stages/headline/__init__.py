"""Headline metrics: the few numbers per stage that `dvc exp show` and `dvc metrics diff` compare.

Each stage writes its full detail under artifacts/ (a DVC output, git-ignored). After a stage
succeeds, `bertops stage NAME` (python -m bertops.stages NAME) writes metrics/NAME.json: a handful
of numbers taken from that detail. metrics/ is tracked by git (dvc.yaml declares these files as
`metrics`, cache: false), so every commit and every experiment carries them and
`dvc metrics diff main` has a baseline.

One module per stage in this package, `headline(params) -> dict`: what it returns is exactly what
the comparison shows. A module per stage, not one file for all, so that changing one stage's
numbers reruns only that stage under DVC (its dvc.yaml deps list its own module only).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertops.errors import BertopsError
from bertops.io import write_json

if TYPE_CHECKING:
    from bertops.config import Params

METRICS_DIR = Path("metrics")
# the stages with headline numbers: the modules of this package
HEADLINES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def read(path: str | Path) -> dict:
    """A stage's detail file (JSON); a missing one is named."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BertopsError(f"headline metrics: {path} is missing (the stage should have written it)") from None


def rounded(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def headline(stage: str, params: Params) -> dict | None:
    """Stage `stage`'s headline numbers (None for a stage without any)."""
    if stage not in HEADLINES:
        return None
    # by name: tests/unit/test_dvc_deps.py counts bertops.stages.headline.NAME as stage NAME's code
    return importlib.import_module(f"{__name__}.{stage}").headline(params)


def write(stage: str, params: Params, root: str | Path = ".") -> Path | None:
    """Write metrics/<stage>.json from the stage's detail output (None for a stage without one)."""
    numbers = headline(stage, params)
    if numbers is None:
        return None
    return write_json(Path(root) / METRICS_DIR / f"{stage}.json", numbers)
