"""Small helpers shared by tests: real servers, a tiny encoder."""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make test installs Debian's chromium)")
        pytest.skip("chromium not installed")
    return path


def dump_dom(url: str, user_data_dir: Path, budget_ms: int = 15000) -> str:
    out = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}",
                          f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    return out.stdout


def write_tiny_encoder(out: Path, max_position_embeddings: int = 128) -> Path:
    """A random BERT (hidden 32, 2 layers, seed 0) with the MiniLM (bert-base-uncased) tokenizer files."""
    import torch
    from transformers import BertConfig, BertModel

    from bertops.train.finetune import resolve_init_dir

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=max_position_embeddings)).save_pretrained(out)
    src = resolve_init_dir("minilm")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, out / name)
    return out


REPO = Path(__file__).resolve().parents[1]


def copy_repo_files(dest: Path) -> Path:
    """The repository's files into dest, as a clone would have them: tracked and new files of the
    working tree, git-ignored ones (artifacts, caches, the venv) left out."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def git_commit_all(project: Path, message: str) -> None:
    """Make `project` its own git repository with everything committed (DVC needs one)."""
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message]):
        subprocess.run(cmd, cwd=project, check=True, capture_output=True)


def project_env(project: Path) -> dict[str, str]:
    """The environment for a copied project's commands: this venv's bin first on PATH, the project's
    own MLflow store and Prefect home, tracking on."""
    return {**os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
            "PREFECT_HOME": str(project / ".prefect"),
            "BERTOPS_TRACKING": "on", "DVC_NO_ANALYTICS": "1",
            # Prefect's temporary server gives up after 20 s by default: too short on busy shared CPUs
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}


def _flows_modules() -> list[str]:
    return [m for m in sys.modules if m == "flows" or m.startswith("flows.")]


@contextlib.contextmanager
def fake_flow_project(root: Path, monkeypatch, pipeline_py: str, params_yaml: str):
    """`root` made to look like a bertops project (flows/pipeline.py = pipeline_py, an empty dvc.yaml,
    params.yaml = params_yaml), importable as `flows` while in use: the repository's own flows package
    (other tests may have imported it) is out of sys.modules, and this fake one is removed again at
    exit, so that monkeypatch's undo brings the repository's back (test_flow must not get the fake)."""
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "__init__.py").write_text("")
    (root / "flows" / "pipeline.py").write_text(pipeline_py)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text(params_yaml)
    for name in _flows_modules():
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield root
    for name in _flows_modules():
        del sys.modules[name]


def imports_of(tree: ast.AST, package: str = "", top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of each import in a parsed module: `from a import b` gives `a` and `a.b`;
    relative imports resolved against `package` (`from .. import tracking` in package bertops.model
    is bertops.tracking). top_level_only: module-level statements only, not function-level imports."""
    found = []
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found
