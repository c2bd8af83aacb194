"""BERT sizes by name, as Google released them (L = layers, H = hidden size, A = attention heads),
built as transformers `BertConfig`s. The feed-forward size is always 4H, as in the BERT paper.

    tiny L2/H128/A2   mini L4/H256/A4   small L4/H512/A8   medium L8/H512/A8
    base L12/H768/A12 large L24/H1024/A16
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bertops.errors import BertopsError

if TYPE_CHECKING:
    from transformers import BertConfig

# name -> (num_hidden_layers, hidden_size, num_attention_heads)
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def preset_fields(preset: str) -> dict[str, int]:
    """The BertConfig fields a preset sets."""
    if preset not in PRESETS:
        raise BertopsError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    layers, hidden, heads = PRESETS[preset]
    return {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
            "intermediate_size": 4 * hidden}


def bert_config(preset: str, vocab_size: int, overrides: dict[str, Any] | None = None,
                pad_token_id: int = 0) -> BertConfig:
    """A BertConfig for `preset`; `overrides` may set any BertConfig field (they win over the preset).

    vocab_size comes from the tokenizer, never from params, so the two cannot disagree.
    """
    from transformers import BertConfig

    fields: dict[str, Any] = {**preset_fields(preset), **(overrides or {})}
    if "vocab_size" in fields:
        raise BertopsError("model.overrides may not set vocab_size: it is taken from the tokenizer")
    known = set(BertConfig().to_dict()) | {"attn_implementation"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise BertopsError(f"model.overrides: unknown BertConfig field(s) {unknown}")
    if fields["hidden_size"] % fields["num_attention_heads"]:
        raise BertopsError(f"hidden_size {fields['hidden_size']} is not a multiple of "
                           f"num_attention_heads {fields['num_attention_heads']}")
    fields.setdefault("attn_implementation", "sdpa")  # stock HF default too; explicit for the benchmark
    return BertConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, **fields)
