"""The `tokenize` stage on the real corpus (two of its sources, to stay fast), with a small vocab:
tokenizer dir, DatasetDict, stats, tracking calls, same bytes on a second run."""

import json
from pathlib import Path

import pytest

from bertops.config import load_params
from bertops.errors import BertopsError
from bertops.stages import tokenize

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["speeches", "rotten-tomatoes-plots"]


TASKS = ["sentiment", "topic", "wic", "code-entities", "define-qa"]


def stage_params(data_dir: Path, out: Path, **extra):
    return load_params(REPO / "params.yaml", {
        "data.dir": str(data_dir), "data.corpus_sources": SOURCES,
        "tokenizer.out_dir": str(out / "tokenizer"), "tokenizer.vocab_size": 2000,
        "pretraining_data.out_dir": str(out / "pretraining_data"),
        "pretraining_data.stats_path": str(out / "tokenize" / "stats.json"),
        "pretraining_data.task_texts_path": str(out / "tokenize" / "task_texts.jsonl"),
        "pretraining_data.task_texts": [],
        **{f"tasks.{t}.path": str(data_dir / "tasks" / t) for t in TASKS},
        "pretraining_data.dupe_factor": 1, **extra})


def tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(real_data_dir, tmp_path_factory):
    """One run, with bertops.tracking's calls recorded (MLflow itself is tested with the tracking
    module; a sqlite MLflow store would triple this test's time)."""
    from contextlib import contextmanager

    out = tmp_path_factory.mktemp("tokenize")
    logged: dict = {"runs": [], "metrics": {}, "artifacts": []}

    @contextmanager
    def stage_run(name, params=None):
        logged["runs"].append((name, params))
        yield None

    mp = pytest.MonkeyPatch()
    mp.setattr(tokenize.tracking, "stage_run", stage_run)
    mp.setattr(tokenize.tracking, "log_metrics", lambda m, step=None: logged["metrics"].update(m))
    mp.setattr(tokenize.tracking, "log_artifact", lambda p, a=None: logged["artifacts"].append((Path(p), a)))
    try:
        result = tokenize.main(stage_params(real_data_dir, out))
    finally:
        mp.undo()
    return out, result, logged


def test_tokenizer_dir_loads_and_gives_segment_ids(first_run):
    from transformers import AutoTokenizer

    out, result, _ = first_run
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    assert len(tok) == result["vocab_size"] == 2000
    enc = tok("We will rebuild the economy.", "Tonight I stand before you.")
    assert enc["token_type_ids"].count(1) > 2 and enc["token_type_ids"][0] == 0
    assert tok.decode(enc["input_ids"], skip_special_tokens=True).startswith("we will rebuild the economy")


def test_pretraining_data_follows_the_contract(first_run):
    import datasets

    out, result, _ = first_run
    dd = datasets.load_from_disk(str(out / "pretraining_data"))
    stats = json.loads((out / "tokenize" / "stats.json").read_text())
    for split in ("train", "validation"):
        ds = dd[split]
        assert len(ds) == stats["splits"][split]["examples"] == result["examples"][split] > 0
        labels = ds["next_sentence_label"]
        assert 0.4 < sum(labels) / len(labels) < 0.7
        for ex in ds.select(range(min(len(ds), 300))):
            ids = ex["input_ids"]
            assert len(ids) <= 128 and ids[0] == 2 and ids[-1] == 3 and ids.count(3) == 2
            sep = ids.index(3)
            assert ex["token_type_ids"] == [0] * (sep + 1) + [1] * (len(ids) - sep - 1)
            assert ex["special_tokens_mask"] == [int(i in (2, 3)) for i in ids]
    assert stats["total"]["tokens"] == sum(len(x) for s in dd for x in dd[s]["input_ids"])
    # most examples fill the sequence (short_seq_prob 0.1); documents shorter than that do not
    lengths = [len(x) for x in dd["train"]["input_ids"]]
    assert max(lengths) == 128 and sum(lengths) / len(lengths) > 64
    assert stats["corpus_tokens_per_s"] > 0 and stats["stage_seconds"] > 0


def test_stage_is_tracked(first_run):
    out, _, logged = first_run
    [(name, params)] = logged["runs"]
    assert name == "tokenize" and params["pretraining_data"]["max_seq_length"] == 128
    assert params["tokenizer"]["vocab_size"] == 2000
    stats = json.loads((out / "tokenize" / "stats.json").read_text())
    assert logged["metrics"]["train"]["examples"] == stats["splits"]["train"]["examples"]
    assert logged["metrics"]["corpus_tokens_per_s"] == stats["corpus_tokens_per_s"] > 0
    assert (out / "tokenize" / "stats.json", "tokenize") in logged["artifacts"]
    assert (out / "tokenizer", "tokenizer") in logged["artifacts"]


def test_second_run_gives_the_same_bytes(first_run, real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    out, _, _ = first_run
    tokenize.main(stage_params(real_data_dir, tmp_path))
    assert tree_bytes(tmp_path / "tokenizer") == tree_bytes(out / "tokenizer")
    assert tree_bytes(tmp_path / "pretraining_data") == tree_bytes(out / "pretraining_data")


def test_missing_corpus_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    with pytest.raises(BertopsError, match="bertops data fetch"):
        tokenize.main(stage_params(tmp_path / "nowhere", tmp_path))


def test_task_texts_join_the_corpus_without_held_out_sentences(first_run, real_data_dir, tmp_path, monkeypatch):
    """pretraining_data.task_texts: the train inputs of the named tasks become corpus documents; no
    sentence of any task's validation or test split enters (WiC and define-qa share WordNet example
    sentences under different splits), labels do not enter, and the stats say what was added."""
    import datasets

    from bertops.io import read_jsonl
    from bertops.text.sentences import split_sentences
    from bertops.text.task_texts import held_out_sentences, normalize_text, record_texts

    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    params = stage_params(real_data_dir, tmp_path, **{"pretraining_data.task_texts": ["wic", "define-qa"]})
    result = tokenize.main(params)
    docs = list(read_jsonl(tmp_path / "tokenize" / "task_texts.jsonl"))
    assert {d["source"] for d in docs} == {"task_texts"}
    assert {d["id"].rsplit("/", 1)[0] for d in docs} == {"task_texts/wic", "task_texts/define-qa"}
    held_out = held_out_sentences(params.tasks)
    sentences = {normalize_text(s) for d in docs for s in split_sentences(d["text"])}
    assert sentences and not sentences & held_out
    # the train inputs are there (those not shared with a held-out split)
    wic_train = [s for rec in read_jsonl(real_data_dir / "tasks" / "wic" / "train.jsonl")
                 for s in record_texts("pair_classification", rec, ["sentence1", "sentence2"])]
    kept = [s for s in wic_train if normalize_text(s) not in held_out]
    assert len(kept) > 0.9 * len(wic_train) and all(normalize_text(s) in sentences for s in kept[:200])
    stats = json.loads((tmp_path / "tokenize" / "stats.json").read_text())
    assert stats["task_texts"]["wic"]["documents"] + stats["task_texts"]["define-qa"]["documents"] == len(docs)
    assert stats["task_texts"]["wic"]["held_out_sentences_dropped"] > 0
    dd = datasets.load_from_disk(str(tmp_path / "pretraining_data"))
    assert result["examples"]["train"] == len(dd["train"]) > first_run[1]["examples"]["train"]
    # without task texts, the declared output is an empty file
    assert (first_run[0] / "tokenize" / "task_texts.jsonl").read_text() == ""


def test_unknown_task_texts_is_a_user_error(real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTOPS_TRACKING", "off")
    with pytest.raises(BertopsError, match="task_texts"):
        tokenize.main(stage_params(real_data_dir, tmp_path, **{"pretraining_data.task_texts": ["nope"]}))


def test_pretraining_corpus_sources_pick_a_subset_of_data(real_data_dir):
    """pretraining_data.corpus_sources chooses what to pretrain on without changing data.corpus_sources
    (which `bertops data fetch` builds data/ and its task splits from)."""
    params = stage_params(real_data_dir, Path("unused"), **{"pretraining_data.corpus_sources": ["speeches"]})
    assert tokenize.corpus_files(params.data, params.pretraining_data.corpus_sources) == [
        real_data_dir / "corpus" / "speeches.jsonl"]
    assert tokenize.corpus_files(params.data) == [real_data_dir / "corpus" / f"{s}.jsonl" for s in SOURCES]
    with pytest.raises(BertopsError, match="nope.jsonl"):
        tokenize.corpus_files(params.data, ["nope"])
