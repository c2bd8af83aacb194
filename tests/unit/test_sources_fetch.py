"""Download cache, checksum pinning and error messages of bertops.data.fetch (no network)."""

import hashlib
import json
import subprocess

import pytest

from bertops.data import fetch
from bertops.errors import BertopsError


def _pkg(registry="pypi", content=b"pkg bytes"):
    return fetch.Package(registry, "somepkg", "1.0", "somepkg-1.0-py3-none-any.whl",
                         hashlib.sha256(content).hexdigest(), "MIT")


def test_cached_file_is_used_without_downloading(tmp_path, monkeypatch):
    (tmp_path / "somepkg-1.0-py3-none-any.whl").write_bytes(b"pkg bytes")
    monkeypatch.setattr(fetch, "_run", lambda *a, **k: pytest.fail("must not download"))
    assert fetch.download(_pkg(), tmp_path, "src").name == "somepkg-1.0-py3-none-any.whl"


def test_download_saves_into_cache(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, cwd):
        calls.append(cmd)
        (cwd / "somepkg-1.0-py3-none-any.whl").write_bytes(b"pkg bytes")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch, "_run", fake_run)
    path = fetch.download(_pkg(), tmp_path / "cache", "src")
    assert path == tmp_path / "cache" / "somepkg-1.0-py3-none-any.whl" and path.read_bytes() == b"pkg bytes"
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "somepkg==1.0" in calls[0]


def test_failed_download_names_source_and_package(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, cwd):
        calls.append(cmd[:2])
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package somepkg")

    monkeypatch.setattr(fetch, "_run", fake_run)
    with pytest.raises(BertopsError, match=r"'wordnet'.*somepkg==1\.0.*Unable to locate"):
        fetch.download(_pkg("debian"), tmp_path, "wordnet")
    assert calls == [["apt-get", "download"], ["apt-get", "update"], ["apt-get", "download"]]


def test_checksum_mismatch_is_an_error(tmp_path):
    (tmp_path / "somepkg-1.0-py3-none-any.whl").write_bytes(b"tampered")
    with pytest.raises(BertopsError, match="sha256"):
        fetch.download(_pkg(), tmp_path, "src")


def test_up_to_date_needs_matching_params_and_files(tmp_path, repo_params):
    assert not fetch.up_to_date(tmp_path, repo_params)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/a.jsonl").write_text("{}\n")
    files = {"corpus/a.jsonl": {"sha256": hashlib.sha256(b"{}\n").hexdigest()}}
    manifest = {"fingerprint": fetch.fingerprint(repo_params), "files": files}
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    assert fetch.up_to_date(tmp_path, repo_params)
    other = repo_params.model_copy(update={"seed": repo_params.seed + 1})
    assert not fetch.up_to_date(tmp_path, other)
    moved = repo_params.model_copy(update={"data": repo_params.data.model_copy(update={"dir": "elsewhere"})})
    assert fetch.up_to_date(tmp_path, moved)  # the output dir is not part of the fingerprint
    # the fetch obeys validate's corpus and leak thresholds, not its report settings
    vp = repo_params.validate_
    stricter = repo_params.model_copy(update={"validate_": vp.model_copy(update={"corpus_min_chars": 500})})
    assert not fetch.up_to_date(tmp_path, stricter)
    report = repo_params.model_copy(update={"validate_": vp.model_copy(update={"out_dir": "elsewhere"})})
    assert fetch.up_to_date(tmp_path, report)
    (tmp_path / "corpus/a.jsonl").write_text("changed\n")
    assert not fetch.up_to_date(tmp_path, repo_params)


def test_unknown_corpus_source_is_rejected(tmp_path, repo_params):
    params = repo_params.model_copy(update={"data": repo_params.data.model_copy(
        update={"dir": str(tmp_path / "d"), "corpus_sources": ["wikipedia"]})})
    with pytest.raises(BertopsError, match="wikipedia"):
        fetch.main(params)
    assert not (tmp_path / "d").exists()  # nothing half-written


def test_pins_cover_every_source():
    assert set(fetch.SOURCES.values()) == set(fetch.PACKAGES)
    assert set(fetch.CORPUS_SOURCES.values()) | set(fetch.TASK_SOURCES.values()) <= set(fetch.SOURCES)
    assert all(len(p.sha256) == 64 for p in fetch.PACKAGES.values())


def test_dvc_pull_only_with_a_remote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.dvc").write_text("outs:\n- path: data\n")
    calls = []

    def fake_run(cmd, cwd, remotes="origin\t/srv/dvc"):
        calls.append(cmd[1:])
        out = remotes if cmd[1:3] == ["remote", "list"] else ""
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(fetch, "_run", fake_run)
    assert fetch.try_dvc_pull(tmp_path / "data") is True
    assert calls == [["remote", "list"], ["pull", "data.dvc"]]
    assert fetch.try_dvc_pull(tmp_path / "elsewhere") is False  # not the tracked data/
    calls.clear()
    monkeypatch.setattr(fetch, "_run", lambda cmd, cwd: fake_run(cmd, cwd, remotes=""))
    assert fetch.try_dvc_pull(tmp_path / "data") is False and calls == [["remote", "list"]]
