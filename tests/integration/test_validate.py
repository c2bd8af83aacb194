"""The validate stage on real data (`real_data_dir`, built by the real fetch), and on copies of it
corrupted one way at a time: each bad input must stop the stage with a DataError naming the file,
the record (id and line) and the rule, after writing the summary and the report.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bertops.errors import DataError
from bertops.stages import validate as validate_stage
from bertops.validation.runner import SPLITS, validate_data

CORPUS_DOCS = 25  # per source, in the clean small copy
TASK_RECORDS = 30  # per split


def params_for(repo_params, data_dir: Path, out_dir: Path, tasks: list[str] | None = None):
    """The repo's params pointed at `data_dir`, optionally keeping only some tasks (faster)."""
    names = list(repo_params.tasks) if tasks is None else tasks
    task_params = {n: repo_params.tasks[n].model_copy(update={"path": str(data_dir / "tasks" / n)}) for n in names}
    return repo_params.model_copy(update={
        "data": repo_params.data.model_copy(update={"dir": str(data_dir)}),
        "tasks": task_params,
        "validate_": repo_params.validate_.model_copy(update={"out_dir": str(out_dir)}),
    })


def data_files(data_dir: Path, repo_params) -> list[Path]:
    files = [data_dir / "corpus" / f"{s}.jsonl" for s in repo_params.data.corpus_sources]
    files += [data_dir / "tasks" / n / f"{split}.jsonl" for n in repo_params.tasks for split in SPLITS]
    return files


@pytest.fixture(scope="session")
def real_result(real_data_dir, repo_params, tmp_path_factory):
    params = params_for(repo_params, real_data_dir, tmp_path_factory.mktemp("real_validation"))
    return validate_data(params)


@pytest.fixture(scope="session")
def clean_small_data(real_data_dir, real_result, repo_params, tmp_path_factory) -> Path:
    """The first records of every real file, skipping any the full validation flagged, so the
    corruption tests start from real data that passes (every rule only loses failures when
    records are dropped)."""
    flagged = {(f.file, f.line) for report in real_result.files for f in report.failures}
    out = tmp_path_factory.mktemp("clean_small") / "data"
    for src in data_files(real_data_dir, repo_params):
        keep = CORPUS_DOCS if src.parent.name == "corpus" else TASK_RECORDS
        lines = []
        with open(src, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if len(lines) == keep:
                    break
                if raw.strip() and (str(src), lineno) not in flagged:
                    lines.append(raw)
        dst = out / src.relative_to(real_data_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(b"".join(lines))
    return out


@pytest.fixture
def data_copy(clean_small_data, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(clean_small_data, dst)
    return dst


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch):
    monkeypatch.setenv("BERTOPS_TRACKING", "off")


# ---- corruptions: each changes one record and returns (line, id) of the record to be named ------

def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _set_line(path: Path, lineno: int, raw: bytes) -> None:
    lines = _lines(path)
    lines[lineno - 1] = raw
    path.write_bytes(b"".join(lines))


def _record(path: Path, lineno: int) -> dict:
    return json.loads(_lines(path)[lineno - 1])


def _edit(path: Path, lineno: int, change: Callable[[dict], None]) -> tuple[int, str]:
    rec = _record(path, lineno)
    change(rec)
    _set_line(path, lineno, json.dumps(rec, ensure_ascii=False).encode() + b"\n")
    return lineno, rec["id"]


def malformed_json(d: Path):
    path = d / "tasks/sentiment/train.jsonl"
    _set_line(path, 3, _lines(path)[2].rstrip()[:-7] + b"\n")
    return 3, None


def invalid_utf8(d: Path):
    path = d / "corpus/austen.jsonl"
    raw = _lines(path)[1]
    _set_line(path, 2, raw[:40] + b"\xff\xfe" + raw[40:])
    return 2, None


def wrong_label(d: Path):
    return _edit(d / "tasks/topic/validation.jsonl", 4, lambda r: r.update(label="sports"))


def bool_label_written_as_int(d: Path):  # JSON 1 is not JSON true, though True == 1 in Python
    return _edit(d / "tasks/wic/test.jsonl", 5, lambda r: r.update(label=int(r["label"])))


def missing_field(d: Path):
    return _edit(d / "tasks/wic/train.jsonl", 2, lambda r: r.pop("sentence2"))


def empty_document(d: Path):
    return _edit(d / "corpus/django-docs.jsonl", 3, lambda r: r.update(text=""))


def one_sentence_document(d: Path):
    text = ("This single sentence is long enough to pass the length rule of the corpus, "
            "but nothing follows it, so no next-sentence pair can be made from it")
    return _edit(d / "corpus/speeches.jsonl", 2, lambda r: r.update(text=text))


def bio_error(d: Path):
    return _edit(d / "tasks/code-entities/train.jsonl", 2, lambda r: r["ner_tags"].__setitem__(0, "I-class"))


def tags_length_mismatch(d: Path):
    return _edit(d / "tasks/code-entities/validation.jsonl", 3, lambda r: r["ner_tags"].pop())


def qa_span_outside_context(d: Path):
    def change(r):
        r["answers"]["answer_start"][0] = len(r["context"])
    return _edit(d / "tasks/define-qa/train.jsonl", 2, change)


def qa_answer_mismatch(d: Path):
    def change(r):
        r["answers"]["text"][0] = r["answers"]["text"][0].upper() + "X"
    return _edit(d / "tasks/define-qa/test.jsonl", 3, change)


def duplicate_id_in_file(d: Path):
    path = d / "tasks/define-qa/validation.jsonl"
    first_id = _record(path, 1)["id"]
    _edit(path, 3, lambda r: r.update(id=first_id))
    return 1, first_id  # both records are flagged; the first is named


def id_in_two_splits(d: Path):
    train_id = _record(d / "tasks/sentiment/train.jsonl", 1)["id"]
    return _edit(d / "tasks/sentiment/test.jsonl", 4, lambda r: r.update(id=train_id))


def text_in_two_splits(d: Path):  # wic: WordNet sentences are not in the corpus, so only this rule breaks
    train = _record(d / "tasks/wic/train.jsonl", 1)
    return _edit(d / "tasks/wic/validation.jsonl", 2,
                 lambda r: r.update(sentence1=train["sentence1"], sentence2=train["sentence2"]))


def leak_test_text_into_corpus(d: Path):
    article = _record(d / "tasks/topic/test.jsonl", 2)
    with open(d / "corpus/bbc.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "bbc/leaked", "source": "bbc", "text": article["text"]}) + "\n")
    return 2, article["id"]


def control_character_in_corpus(d: Path):  # a stray NUL: BERT's normalizer would drop it silently
    return _edit(d / "corpus/bbc.jsonl", 3, lambda r: r.update(text=r["text"][:50] + "\x00" + r["text"][50:]))


def control_character_in_task_text(d: Path):  # a terminal escape sequence pasted into a review
    return _edit(d / "tasks/sentiment/validation.jsonl", 2, lambda r: r.update(text="\x1b[1m" + r["text"]))


def control_character_in_a_token(d: Path):  # a form feed inside one token of a token task
    return _edit(d / "tasks/code-entities/test.jsonl", 2,
                 lambda r: r["tokens"].__setitem__(1, r["tokens"][1] + "\x0c"))


def missing_split(d: Path):
    (d / "tasks/wic/validation.jsonl").unlink()
    return None, None


CASES = [  # corruption, file, rule, tasks to validate (corpus always)
    (malformed_json, "tasks/sentiment/train.jsonl", "valid_json", ["sentiment"]),
    (invalid_utf8, "corpus/austen.jsonl", "valid_utf8", []),
    (wrong_label, "tasks/topic/validation.jsonl", "in_label_set:label", ["topic"]),
    (bool_label_written_as_int, "tasks/wic/test.jsonl", "in_label_set:label", ["wic"]),
    (missing_field, "tasks/wic/train.jsonl", "not_null:sentence2", ["wic"]),
    (empty_document, "corpus/django-docs.jsonl", "length_between:text", []),
    (one_sentence_document, "corpus/speeches.jsonl", "min_sentences:text", []),
    (bio_error, "tasks/code-entities/train.jsonl", "bio_tags", ["code-entities"]),
    (tags_length_mismatch, "tasks/code-entities/validation.jsonl", "tokens_tags_same_length", ["code-entities"]),
    (qa_span_outside_context, "tasks/define-qa/train.jsonl", "answer_span", ["define-qa"]),
    (qa_answer_mismatch, "tasks/define-qa/test.jsonl", "answer_span", ["define-qa"]),
    (duplicate_id_in_file, "tasks/define-qa/validation.jsonl", "unique:id", ["define-qa"]),
    (id_in_two_splits, "tasks/sentiment/test.jsonl", "id_in_one_split", ["sentiment"]),
    (text_in_two_splits, "tasks/wic/validation.jsonl", "text_in_one_split", ["wic"]),
    (leak_test_text_into_corpus, "tasks/topic/test.jsonl", "not_in_pretraining_corpus", ["topic"]),
    (missing_split, "tasks/wic/validation.jsonl", "file_exists", ["wic"]),
    (control_character_in_corpus, "corpus/bbc.jsonl", "no_control_characters", []),
    (control_character_in_task_text, "tasks/sentiment/validation.jsonl", "no_control_characters", ["sentiment"]),
    (control_character_in_a_token, "tasks/code-entities/test.jsonl", "no_control_characters", ["code-entities"]),
]


@pytest.mark.parametrize("corrupt, file, rule, tasks", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input_stops_the_stage_naming_file_record_rule(data_copy, repo_params, tmp_path,
                                                           corrupt, file, rule, tasks):
    out_dir = tmp_path / "out"
    params = params_for(repo_params, data_copy, out_dir, tasks)
    line, rid = corrupt(data_copy)
    with pytest.raises(DataError) as excinfo:
        validate_stage.main(params)
    err, message = excinfo.value, str(excinfo.value)
    path = str(data_copy / file)
    assert (err.file, err.rule) == (path, rule), message
    assert path in message and f"rule '{rule}'" in message
    if line is None:
        assert err.record is None
    else:
        assert f"line {line}" in err.record and f"line {line}" in message
    if rid is not None:
        assert repr(rid) in err.record
    # the outputs are written anyway, so people can see why
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["success"] is False and summary["first_failure"]["rule"] == rule
    key = file.removesuffix(".jsonl")
    assert summary["per_file"][key]["rules"][rule]["failed"] >= 1
    assert rule in (out_dir / "report.html").read_text()


def test_clean_copy_passes_with_deterministic_outputs_and_cli_exit_codes(data_copy, repo_params, tmp_path, capsys):
    from bertops import cli

    out_dir = tmp_path / "out"
    params = params_for(repo_params, data_copy, out_dir)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(by_alias=True), sort_keys=False))

    assert cli.main(["stage", "validate", "--params", str(params_file)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["success"] is True and result["files"] == 20
    summary_bytes = (out_dir / "summary.json").read_bytes()
    report_bytes = (out_dir / "report.html").read_bytes()
    summary = json.loads(summary_bytes)
    assert summary["success"] is True and summary["failures"] == 0
    assert summary["per_file"]["tasks/sentiment/train"]["records"] == TASK_RECORDS
    assert set(summary["per_file"]["tasks/topic/test"]["class_balance"]) <= set(repo_params.tasks["topic"].labels)
    assert summary["rules"]["bio_tags"]["checked"] == 3 * TASK_RECORDS  # every split of code-entities

    assert validate_stage.main(params)["success"] is True  # a second run: same bytes
    assert (out_dir / "summary.json").read_bytes() == summary_bytes
    assert (out_dir / "report.html").read_bytes() == report_bytes

    bio_error(data_copy)
    assert cli.main(["stage", "validate", "--params", str(params_file)]) == 2
    err = capsys.readouterr().err
    assert "tasks/code-entities/train.jsonl, record id" in err and "rule 'bio_tags' broken" in err
    assert "Traceback" not in err


def test_stage_logs_metrics_and_report_to_mlflow(data_copy, repo_params, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("BERTOPS_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BERTOPS_EXPERIMENT", "validate-test")
    params = params_for(repo_params, data_copy, tmp_path / "out", tasks=["wic"])
    wrong_label_line, _ = bool_label_written_as_int(data_copy)
    with pytest.raises(DataError):
        validate_stage.main(params)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("validate-test").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["bertops.stage"] == "validate"
    metrics = run.data.metrics
    assert metrics["success"] == 0 and metrics["failures"] == 1
    assert metrics["rules_failed.in_label_set:label"] == 1
    assert metrics["tasks.wic.train.records"] == TASK_RECORDS  # tracking.log_metrics turns "/" into "."
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "validation")}
    assert artifacts == {"validation/summary.json", "validation/report.html"}


def test_real_data_passes(real_result, repo_params):
    """The real built-in data, every file and rule (a failure lists what to fix in data fetch)."""
    failures = [f for report in real_result.files for f in report.failures]
    counts = {report.key: report.n_failures for report in real_result.files if report.n_failures}
    shown = "\n".join(f"{f.file} {f.record}: {f.rule}: {f.detail}" for f in failures[:15])
    assert real_result.success, f"{len(failures)} failures {counts}:\n{shown}"
    assert len(real_result.files) == len(repo_params.data.corpus_sources) + 3 * len(repo_params.tasks)
    assert all(report.records > 0 for report in real_result.files)
