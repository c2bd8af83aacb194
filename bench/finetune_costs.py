"""What one task costs to train and to store, per finetune.mode, for model presets (no training):
trainable parameters as % of the encoder and bytes stored per task (bertops.train.adapters.parameter_costs;
adapters: the saved adapters/<task>/ files). Tasks and adapter settings from params.yaml.

    .venv/bin/python bench/finetune_costs.py [--presets tiny base] [--vocab-size N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"])
    ap.add_argument("--vocab-size", type=int, default=None, help="default: tokenizer.vocab_size (tiny), 30522 else")
    args = ap.parse_args(argv)
    from bertops.env import apply_offline_env

    apply_offline_env()
    import torch
    from transformers import AutoTokenizer, BertModel

    from bertops.config import load_params
    from bertops.data.tasks import TaskSpec
    from bertops.model.multitask import MultiTaskModel
    from bertops.model.presets import bert_config
    from bertops.train.adapters import adapter_settings, parameter_costs
    from bertops.train.finetune import resolve_init_dir

    params = load_params("params.yaml")
    specs = [TaskSpec.from_params(t, params.tasks[t]) for t in (params.finetune.tasks or params.tasks)]
    tokenizer = AutoTokenizer.from_pretrained(resolve_init_dir("minilm"))
    settings = adapter_settings(params.finetune.model_copy(update={"mode": "adapters"}))
    print("| preset | encoder params | mode | trainable (% of encoder) | stored per task |")
    print("|---|---:|---|---:|---:|")
    for preset in args.presets:
        vocab = args.vocab_size or (params.tokenizer.vocab_size if preset == "tiny" else 30522)
        for mode in ("finetune", "adapters", "feature_extraction"):
            torch.manual_seed(0)
            model = MultiTaskModel(BertModel(bert_config(preset, vocab)), tokenizer, specs,
                                   freeze_encoder=mode == "feature_extraction",
                                   adapters=settings if mode == "adapters" else None,
                                   pooling=params.finetune.pooling)
            with tempfile.TemporaryDirectory() as d:
                if mode == "adapters":
                    model.save_pretrained(d)
                c = parameter_costs(model, Path(d), mode)
            print(f"| {preset} (vocab {vocab}) | {c['encoder_params']:,} | {mode} | {c['trainable_pct']:.2f}% | "
                  f"{c['bytes_per_task'] / 1e6:.2f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
