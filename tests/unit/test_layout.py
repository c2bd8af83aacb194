"""The code layout rules of architecture.md, checked on the source tree (no imports executed).

- core (`data`, `text`, `model`, `train`, `evaluate`) imports no orchestration or tracking library
  at module level, and never the adapter or entry-point layers, so it runs on a bare GPU worker;
- no module under src/ is longer than MAX_LINES unless it says why in a `# long-module:` comment.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import imports_of

SRC = Path(__file__).resolve().parents[2] / "src" / "bertops"
CORE = ("data", "text", "model", "train", "evaluate")
MLOPS_LIBS = ("prefect", "mlflow", "dvc", "great_expectations")
UPPER_LAYERS = ("bertops.validation", "bertops.tracking", "bertops.stages", "bertops.cli", "flows")
MAX_LINES = 400


def _package(path: Path) -> str:
    module = ".".join(("bertops", *path.relative_to(SRC).with_suffix("").parts))
    return module.removesuffix(".__init__") if path.name == "__init__.py" else module.rpartition(".")[0]


def _core_modules() -> list[Path]:
    return sorted(p for layer in CORE for p in (SRC / layer).rglob("*.py"))


def test_core_imports_no_mlops_library_at_module_level():
    bad = [f"{p.relative_to(SRC)}:{line} imports {name}"
           for p in _core_modules()
           for line, name in imports_of(ast.parse(p.read_text()), _package(p), top_level_only=True)
           if name.split(".")[0] in MLOPS_LIBS]
    assert not bad, "core modules must run without the MLOps stack:\n" + "\n".join(bad)


def test_core_never_imports_adapters_or_entry_points():
    bad = [f"{p.relative_to(SRC)}:{line} imports {name}"
           for p in _core_modules()
           for line, name in imports_of(ast.parse(p.read_text()), _package(p))
           if name.startswith(UPPER_LAYERS)]
    assert not bad, "core may not depend on validation/tracking/stages/cli/flows:\n" + "\n".join(bad)


def test_layer_check_sees_a_violation(tmp_path):
    """The checker itself: a module-level mlflow import is found, a function-level one is not."""
    tree = ast.parse("import os\nimport mlflow.pyfunc\ndef f():\n    import prefect\n")
    assert [n for _, n in imports_of(tree, top_level_only=True)] == ["os", "mlflow.pyfunc"]
    assert "prefect" in [n for _, n in imports_of(tree)]
    # relative and `from package import module` forms name the module they reach
    tree = ast.parse("from ... import tracking\nfrom ..stages import x\nfrom bertops import cli\n")
    names = [n for _, n in imports_of(tree, "bertops.model.multitask", top_level_only=True)]
    assert {"bertops.tracking", "bertops.model.stages", "bertops.cli"} <= set(names)
    assert _package(SRC / "model" / "multitask" / "__init__.py") == "bertops.model.multitask"
    assert _package(SRC / "model" / "presets.py") == "bertops.model"


def test_modules_are_short_or_say_why():
    long = [f"{p.relative_to(SRC)}: {n} lines"
            for p in sorted(SRC.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES and "# long-module:" not in p.read_text()]
    assert not long, "split these modules (or add a '# long-module: <reason>' comment):\n" + "\n".join(long)
