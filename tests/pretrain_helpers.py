"""Tiny stand-ins for artifacts/tokenizer and artifacts/pretraining_data, for pretraining tests.

The tokenizer is a hand-written WordPiece vocabulary wrapped as BertTokenizerFast (the wrapper
that returns token_type_ids); the dataset follows the pretraining_data contract: DatasetDict with
train/validation, columns input_ids ("[CLS] A [SEP] B [SEP]"), token_type_ids,
next_sentence_label (0 = real next, 1 = random), special_tokens_mask.
"""

from __future__ import annotations

import random
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOPICS = {
    "code": ["model", "field", "query", "view", "form", "template", "url", "request", "response", "cache"],
    "novel": ["lady", "sister", "marriage", "letter", "ball", "house", "fortune", "sense", "pride", "heart"],
    "news": ["market", "bank", "minister", "election", "team", "match", "film", "music", "phone", "company"],
}
GLUE = ["the", "a", "of", "and", "to", "is", "was", "in", "on", "with"]
VOCAB = SPECIALS + GLUE + sorted({w for ws in TOPICS.values() for w in ws}) + [
    "un", "##s", "##ed", "##ing", "##ly", ".", ","]


def tiny_tokenizer(out_dir: str | Path | None = None):
    """A BertTokenizerFast over VOCAB (ids in list order), saved to out_dir when given."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=512)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


TEMPLATES = ["the {a} is in the {b} .", "a {a} was with the {b} .", "the {b} of the {a} is {a} ."]


def _document(rng: random.Random, topic: str, n: int) -> list[str]:
    """n sentences about two words of one topic, from three templates: learnable in a few steps."""
    a, b = rng.sample(TOPICS[topic], 2)
    return [rng.choice(TEMPLATES).format(a=a, b=b + rng.choice(["", "s"])) for _ in range(n)]


def tiny_pretraining_dataset(tokenizer, n_train: int = 256, n_val: int = 64, max_seq_length: int = 48,
                             seed: int = 0):
    """NSP pairs from synthetic topic documents: B is the next sentence of A's document (label 0)
    or a sentence of a document on another topic (label 1), half each."""
    from datasets import Dataset, DatasetDict

    rng = random.Random(seed)

    def examples(n):
        rows = {"input_ids": [], "token_type_ids": [], "next_sentence_label": [], "special_tokens_mask": []}
        for _ in range(n):
            topic = rng.choice(sorted(TOPICS))
            doc = _document(rng, topic, 4)
            label = rng.randint(0, 1)
            if label == 0:
                b = doc[2]
            else:
                b = _document(rng, rng.choice(sorted(set(TOPICS) - {topic})), 1)[0]
            enc = tokenizer(" ".join(doc[:2]), b, truncation="longest_first",
                            max_length=rng.randint(16, max_seq_length), return_special_tokens_mask=True)
            for key, column in rows.items():
                column.append(label if key == "next_sentence_label" else enc[key])
        return Dataset.from_dict(rows)

    return DatasetDict({"train": examples(n_train), "validation": examples(n_val)})


def write_tiny_pretraining_inputs(root: Path, n_train: int = 256, n_val: int = 64,
                                  max_seq_length: int = 48) -> tuple[Path, Path]:
    """Save the tiny tokenizer and dataset under root; returns (data_dir, tokenizer_dir)."""
    tok_dir, data_dir = root / "tokenizer", root / "pretraining_data"
    tok = tiny_tokenizer(tok_dir)
    tiny_pretraining_dataset(tok, n_train, n_val, max_seq_length).save_to_disk(str(data_dir))
    return data_dir, tok_dir


TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def tiny_pretrain_overrides(data_dir: str | Path, tok_dir: str | Path, out_dir: str | Path, **pretrain) -> dict:
    """params.yaml overrides (dotted keys) for a tiny CPU pretraining run; `pretrain` adds or changes
    pretrain.* keys."""
    overrides = {"model.preset": "tiny", "model.overrides": TINY_MODEL,
                 "pretrain.data_dir": str(data_dir), "pretrain.tokenizer_dir": str(tok_dir),
                 "pretrain.out_dir": str(out_dir), "pretrain.batch_size": 16,
                 # a step budget: the tests compare weights bit for bit (a time budget depends on speed)
                 "pretrain.max_time": None,
                 "pretrain.learning_rate": 3e-3, "pretrain.warmup_steps": 5, "pretrain.peak_tflops": 0.05,
                 "pretrain.log_every_n_steps": 5, "pretrain.accelerator": "cpu", "pretrain.devices": 1}
    overrides.update({f"pretrain.{k}": v for k, v in pretrain.items()})
    return overrides


def stop_at_step(step: int):
    """A Lightning callback that stops training as a SIGTERM would at the end of step `step` (it sets
    what Lightning's SIGTERM handler sets): the run checkpoints and exits like a preempted one."""
    import lightning as L

    class StopAt(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == step:
                trainer._signal_connector.received_sigterm = True

    return StopAt()
