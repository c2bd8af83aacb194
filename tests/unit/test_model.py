"""Presets, the sparse-MLM objective against stock BertForPreTraining, the FLOP convention, and the
saved checkpoint being a standard one (from_pretrained and the fill-mask pipeline, no bertops)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import BertForPreTraining

from bertops.errors import BertopsError
from bertops.model.presets import PRESETS, bert_config
from bertops.model.pretraining import BertPretrainingObjective, build_pretraining_model
from bertops.text.masking import PretrainingCollator
from bertops.train.flops import executed_flops_per_token, model_flops_per_token
from tests.pretrain_helpers import tiny_pretraining_dataset, tiny_tokenizer

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def batch(tok):
    ds = tiny_pretraining_dataset(tok, n_train=12, n_val=1, seed=4)["train"]
    return PretrainingCollator(tok, seed=0)([ds[i] for i in range(len(ds))])


def test_presets_follow_google_sizes():
    expected = {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8), "medium": (8, 512, 8),
                "base": (12, 768, 12), "large": (24, 1024, 16)}
    assert PRESETS == expected
    for name, (layers, hidden, heads) in expected.items():
        c = bert_config(name, vocab_size=1234)
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (layers, hidden, heads)
        assert c.intermediate_size == 4 * hidden and c.vocab_size == 1234
    c = bert_config("tiny", 99, {"hidden_dropout_prob": 0.0, "num_hidden_layers": 3})
    assert c.hidden_dropout_prob == 0.0 and c.num_hidden_layers == 3 and c.hidden_size == 128
    with pytest.raises(BertopsError):
        bert_config("huge", 99)
    with pytest.raises(BertopsError, match="vocab_size"):
        bert_config("tiny", 99, {"vocab_size": 5})
    with pytest.raises(BertopsError, match="unknown"):
        bert_config("tiny", 99, {"hiden_size": 5})


@pytest.mark.parametrize("max_predictions", [None, 200])
def test_sparse_head_matches_stock_loss_and_gradients(tok, batch, max_predictions):
    torch.manual_seed(0)
    stock = build_pretraining_model(bert_config("tiny", len(tok), SMALL)).eval()  # eval: no dropout
    sparse = BertPretrainingObjective(stock, max_predictions=max_predictions)
    assert (batch["labels"] != -100).sum() < 200  # so the static gather keeps every masked position

    ref = stock(**batch)
    ref.loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in stock.named_parameters()}
    stock.zero_grad()

    out = sparse(**batch)
    out.loss.backward()
    dense_logits = ref.prediction_logits[batch["labels"] != -100]
    masked_labels = batch["labels"][batch["labels"] != -100]
    assert torch.allclose(out.loss, ref.loss, atol=1e-5)
    assert torch.allclose(out.mlm_loss, torch.nn.functional.cross_entropy(dense_logits, masked_labels), atol=1e-5)
    assert out.mlm_count == masked_labels.numel() and out.mlm_dropped == 0
    assert out.mlm_correct == (dense_logits.argmax(-1) == masked_labels).sum()
    assert out.nsp_correct == (ref.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum()
    assert out.predicted_positions == (max_predictions or masked_labels.numel())
    for name, p in stock.named_parameters():
        assert torch.allclose(p.grad, ref_grads[name], atol=1e-5), name


def test_static_gather_counts_dropped_positions(tok, batch):
    model = BertPretrainingObjective(build_pretraining_model(bert_config("tiny", len(tok), SMALL)), max_predictions=5)
    out = model(**batch)
    n_masked = int((batch["labels"] != -100).sum())
    assert out.predicted_positions == 5 and out.mlm_count == 5 and out.mlm_dropped == n_masked - 5


def test_static_shapes_compile_to_one_graph(tok):
    """The GPU path: with a fixed length and a fixed number of MLM rows, batches with different
    numbers of masked tokens reuse one graph (aot_eager: no C++ build needed on CPU)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    ds = tiny_pretraining_dataset(tok, n_train=24, n_val=1, seed=6)["train"]
    collate = PretrainingCollator(tok, pad_to_length=48, seed=1)
    batches = [collate([ds[i] for i in range(k, k + 8)]) for k in (0, 8, 16)]
    assert len({int((b["labels"] != -100).sum()) for b in batches}) > 1
    model = BertPretrainingObjective(build_pretraining_model(
        bert_config("tiny", len(tok), {**SMALL, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})),
        max_predictions=8 * 12)
    eager = [model(**b).loss for b in batches]
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    for b, ref in zip(batches, eager):
        assert torch.allclose(compiled(**b).loss, ref, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1


def test_flop_convention_matches_performance_notes():
    # performance.md: BERT-base, seq 128, 361k tokens/s ~ 240 TFLOP/s by the stock convention
    c = bert_config("base", 30522)
    assert model_flops_per_token(c, 128) * 359_246 / 1e12 == pytest.approx(240, rel=0.02)
    # the sparse head skips the MLM transform + decoder at 85% of the positions
    saved = model_flops_per_token(c, 128) - executed_flops_per_token(c, 128, 0.15)
    assert saved == pytest.approx(6 * 0.85 * (768 ** 2 + 30522 * 768))


@pytest.mark.slow  # a fresh interpreter importing torch + transformers
def test_saved_checkpoint_is_standard_bert(tok, batch, tmp_path):
    """save_pretrained + tokenizer files load with plain transformers, in a process where bertops
    cannot be imported: BertForPreTraining gives the same logits, fill-mask agrees with our head."""
    torch.manual_seed(1)
    model = build_pretraining_model(bert_config("tiny", len(tok), SMALL)).eval()
    model.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    text = "the model [MASK] the view."
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).prediction_logits[0]
    pos = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0])
    expected_top = int(logits[pos].argmax())
    torch.save({"batch": dict(batch), "logits": model(**batch).prediction_logits.detach()}, tmp_path / "ref.pt")

    script = f"""
import json, sys, torch
sys.modules["bertops"] = None  # prove the checkpoint needs nothing from bertops
from transformers import BertForPreTraining, pipeline
d = {str(tmp_path)!r}
ref = torch.load(d + "/ref.pt")
m = BertForPreTraining.from_pretrained(d).eval()
same = torch.allclose(m(**ref["batch"]).prediction_logits, ref["logits"], atol=1e-5)
tied = m.cls.predictions.decoder.weight.data_ptr() == m.bert.embeddings.word_embeddings.weight.data_ptr()
preds = pipeline("fill-mask", model=d, top_k=3)({text!r})
print(json.dumps({{"same": bool(same), "tied": tied, "arch": m.config.architectures,
                  "top": preds[0]["token"], "n": len(preds)}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["same"] and got["tied"] and got["arch"] == ["BertForPreTraining"]
    assert got["n"] == 3 and got["top"] == expected_top
    assert isinstance(BertForPreTraining.from_pretrained(str(tmp_path)), BertForPreTraining)


@pytest.mark.slow  # a fresh interpreter importing torch + transformers
def test_benchmark_runs_without_the_mlops_stack(tmp_path):
    """bench/pretrain_throughput.py must run on a bare GPU worker: block prefect, mlflow, dvc and
    great_expectations, run it on a tiny config and read its results."""
    from tests.conftest import REPO_ROOT

    script = (
        "import sys, runpy\n"
        "for m in ('prefect', 'mlflow', 'dvc', 'great_expectations'): sys.modules[m] = None\n"
        f"sys.argv = ['pretrain_throughput.py', '--preset', 'tiny', '--vocab-size', '2000', '--batch-size', '4',"
        f" '--seq-len', '32', '--steps', '1', '--windows', '2', '--warmup', '1', '--no-compile-stock',"
        f" '--json', {str(tmp_path / 'r.json')!r}]\n"
        f"runpy.run_path({str(REPO_ROOT / 'bench' / 'pretrain_throughput.py')!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| stock HF BertForPreTraining |" in proc.stdout and "| bertops |" in proc.stdout
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["stock HF BertForPreTraining", "bertops"]
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio"] > 0 and all(r["tokens_per_s"] > 0 for r in rows)
    assert rows[1]["mfu_executed"] < rows[1]["mfu_model"]  # sparse MLM: fewer FLOPs executed
    # both baselines and both peaks are named: without compile there is no stock + compile row, and
    # a CPU has no datasheet peak unless one is given
    assert "| vs stock eager | vs stock + compile |" in proc.stdout and "MFU vs measured ceiling" in proc.stdout
    assert rows[1]["speedup_vs_stock_eager"] == rows[1]["ratio"] and rows[1]["speedup_vs_stock_compile"] is None
    assert rows[1]["mfu_model_datasheet"] is None and "datasheet n/a" in proc.stdout


def test_datasheet_peaks():
    from bertops.train.flops import datasheet_peak_tflops

    assert datasheet_peak_tflops("NVIDIA H100 80GB HBM3", "bf16")[0] == pytest.approx(989.4)  # SXM
    assert datasheet_peak_tflops("NVIDIA H200", "bf16")[0] == pytest.approx(989.4)
    assert datasheet_peak_tflops("NVIDIA H100 PCIe", "bf16")[0] == 756.0
    assert datasheet_peak_tflops("NVIDIA A100-SXM4-80GB", "bf16")[0] == 312.0
    assert datasheet_peak_tflops("NVIDIA A100-SXM4-80GB", "tf32")[0] == 156.0
    assert datasheet_peak_tflops("NVIDIA A10", "bf16")[0] == 125.0  # not taken for an A100
    assert datasheet_peak_tflops("NVIDIA GH200 480GB", "bf16")[1].startswith("GH200")
    assert datasheet_peak_tflops("CPU, 2 threads", "tf32") is None
