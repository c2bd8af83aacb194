"""dvc.yaml's code dependencies cannot drift from the code: each stage's `deps` must cover every
bertops source file its command imports, so changing any of them reruns the stage.

A stage's command is `bertops stage NAME`. What runs: src/bertops/cli.py (what it imports at
module level and in the functions of the `stage` command; its other functions serve the other
commands), bertops.config (parameters are loaded through it) and bertops.stages.NAME with
everything it imports, function-level imports included, transitively. A dep covers a file when
it is that file or a directory above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
# what `bertops stage NAME` runs in cli.py (besides its module-level code)
CLI_STAGE_FUNCTIONS = frozenset({"main", "_cmd_stage", "_load"})


def module_file(name: str) -> Path | None:
    """The source file of module `name` under src/, or None (not a module: an attribute)."""
    base = SRC.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported_names(path: Path, module: str, only_functions: frozenset[str] | None = None) -> set[str]:
    """Dotted names a module imports (`from a import b` gives `a` and `a.b`), relative ones resolved.
    With only_functions: its module-level imports and those inside the functions named."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if only_functions is None:
        nodes = list(ast.walk(tree))
    else:
        nodes = list(tree.body) + [n for top in tree.body if isinstance(top, ast.FunctionDef)
                                   and top.name in only_functions for n in ast.walk(top)]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def transitive_files(roots: list[str], only_functions: dict[str, frozenset[str]] | None = None) -> set[Path]:
    """Source files of `roots` and of every bertops module they import, transitively."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = [n for r in roots for n in _with_parents(r)]
    while todo:
        name = todo.pop()
        if name in seen or not (name == "bertops" or name.startswith("bertops.")):
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        files.add(path)
        for imported in imported_names(path, name, (only_functions or {}).get(name)):
            todo.extend(_with_parents(imported))
    return {f for f in files if not _inert_init(f)}


def _inert_init(path: Path) -> bool:
    """A package __init__.py holding only a docstring and constants cannot change a stage's result."""
    if path.name != "__init__.py":
        return False
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            continue
        return False
    return True


def stage_code_files(stage: str, cmd: str) -> set[str]:
    """Repository-relative paths of the bertops source files that `cmd` runs."""
    words = cmd.split()
    assert words[:2] == ["bertops", "stage"] and len(words) >= 3, (
        f"stage {stage!r}: cmd {cmd!r} is not `bertops stage NAME`; teach this test what it runs")
    roots = ["bertops.cli", "bertops.config", f"bertops.stages.{words[2]}"]
    assert module_file(roots[-1]) is not None, f"stage {stage!r}: no module {roots[-1]}"
    files = transitive_files(roots, only_functions={"bertops.cli": CLI_STAGE_FUNCTIONS})
    return {f.relative_to(REPO).as_posix() for f in files}


def _dep_path(dep) -> str:
    return next(iter(dep)) if isinstance(dep, dict) else str(dep)


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in deps)


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_cover_the_code_it_runs(stage):
    spec = _stages()[stage]
    deps = [_dep_path(d) for d in spec.get("deps", [])]
    missing = sorted(f for f in stage_code_files(stage, spec["cmd"]) if not covered(f, deps))
    assert not missing, (f"dvc.yaml stage {stage!r} runs code its deps do not list, so changing it "
                         f"would not rerun the stage; add these (or a directory above them): {missing}")


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_code_deps_exist(stage):
    # a dep on a moved or deleted file covers nothing
    deps = [_dep_path(d) for d in _stages()[stage].get("deps", [])]
    gone = [d for d in deps if d.startswith("src/") and not (REPO / d).exists()]
    assert not gone, f"dvc.yaml stage {stage!r} lists code deps that do not exist: {gone}"


def test_the_import_walk_sees_function_level_and_relative_imports(tmp_path):
    # the checker itself: a function-level import and a `from . import` are followed
    files = stage_code_files("finetune", "bertops stage finetune")
    assert "src/bertops/evaluate/metrics.py" in files  # imported inside score_task()
    assert "src/bertops/config.py" in files and "src/bertops/cli.py" in files
    assert "src/bertops/data/fetch.py" not in files  # cli's `data fetch` command is not a stage's code
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from . import sibling\n    from .sub import thing\n")
    assert imported_names(mod, "pkg.m") >= {"pkg", "pkg.sibling", "pkg.sub", "pkg.sub.thing"}
    assert not covered("src/bertops/evaluate/metrics.py", ["src/bertops/eval"])
    assert covered("src/bertops/evaluate/metrics.py", ["src/bertops/evaluate/"])
