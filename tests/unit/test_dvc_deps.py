"""dvc.yaml's code dependencies cannot drift from the code: each stage's `deps` must cover every
bertops source file its command imports, so changing any of them reruns the stage.

A stage's command is `python -m bertops.stages NAME` (the stage launcher, not the whole CLI). What
runs: bertops/stages/__main__.py, and the two modules it imports by name, the stage
bertops.stages.NAME and its headline numbers bertops.stages.headline.NAME (when the stage has any),
each with everything it imports, function-level imports included, transitively. A dep covers a
file when it is that file or a directory above it. Deps are also kept lean: a code dep that covers
none of the files a stage runs is an error (it would rerun the stage for nothing).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers import imports_of

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
LAUNCHER = ["python", "-m", "bertops.stages"]


def module_file(name: str) -> Path | None:
    """The source file of module `name` under src/, or None (not a module: an attribute)."""
    base = SRC.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported_names(path: Path, module: str) -> set[str]:
    """Dotted names a module imports anywhere in it (`from a import b` gives `a` and `a.b`), relative
    ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return {name for _, name in imports_of(tree, package)}


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def transitive_files(roots: list[str]) -> set[Path]:
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
        for imported in imported_names(path, name):
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
    assert words[:3] == LAUNCHER and len(words) >= 4, (
        f"stage {stage!r}: cmd {cmd!r} is not `python -m bertops.stages NAME`; teach this test what it runs")
    name = words[3]
    module = f"bertops.stages.{name}"
    assert module_file(module) is not None, f"stage {stage!r}: no module {module}"
    # imported by name in bertops/stages/__main__.py (run_stage) and bertops/stages/headline (headline)
    roots = ["bertops.stages.__main__", module]
    if module_file(f"bertops.stages.headline.{name}") is not None:
        roots.append(f"bertops.stages.headline.{name}")
    return {f.relative_to(REPO).as_posix() for f in transitive_files(roots)}


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


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_code_deps_are_code_it_runs(stage):
    # a code dep the stage does not run would rerun it (hours of pretraining) for an unrelated edit
    spec = _stages()[stage]
    files = stage_code_files(stage, spec["cmd"])
    unused = [d for d in (_dep_path(x) for x in spec.get("deps", []))
              if d.startswith("src/") and not any(covered(f, [d]) for f in files)]
    assert not unused, f"dvc.yaml stage {stage!r} lists code deps it does not run: {unused}"


def test_stages_that_read_no_task_do_not_depend_on_task_types_or_the_cli():
    # editing a task head, a task type's decoding or another CLI command reruns no tokenization or
    # pretraining: loading parameters does not import the task-type registry (bertops.config_tasks
    # checks tasks where they are used) and the stage launcher does not import the CLI
    for stage in ("tokenize", "pretrain"):
        files = stage_code_files(stage, _stages()[stage]["cmd"])
        assert not [f for f in files if f.startswith("src/bertops/model/multitask/")], stage
        assert "src/bertops/cli.py" not in files and "src/bertops/config_tasks.py" not in files, stage
        assert f"src/bertops/stages/headline/{stage}.py" in files, stage
        assert "src/bertops/stages/headline/finetune.py" not in files, stage  # only its own numbers


def test_the_import_walk_sees_function_level_and_relative_imports(tmp_path):
    # the checker itself: a function-level import and a `from . import` are followed
    files = stage_code_files("finetune", "python -m bertops.stages finetune")
    assert "src/bertops/evaluate/metrics.py" in files  # imported inside score_task()
    assert "src/bertops/config.py" in files and "src/bertops/lifeline.py" in files  # inside run_stage()
    assert "src/bertops/config_tasks.py" in files and "src/bertops/stages/headline/finetune.py" in files
    assert "src/bertops/cli.py" not in files  # `bertops stage` is for people; dvc.yaml runs the launcher
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from . import sibling\n    from .sub import thing\n")
    assert imported_names(mod, "pkg.m") >= {"pkg", "pkg.sibling", "pkg.sub", "pkg.sub.thing"}
    assert not covered("src/bertops/evaluate/metrics.py", ["src/bertops/eval"])
    assert covered("src/bertops/evaluate/metrics.py", ["src/bertops/evaluate/"])
