"""The BERT WordPiece tokenizer: trained on the corpus with Hugging Face `tokenizers`, or built from
a given vocab.txt, and saved as a transformers tokenizer directory.

The pipeline is BERT's: BertNormalizer (clean text, CJK spacing, optional lowercase + accent
stripping), BertPreTokenizer (whitespace + punctuation), WordPiece with "##" continuations,
"[CLS] A [SEP] B [SEP]" with token_type_ids 0 for A and 1 for B, WordPiece decoder.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from bertops.errors import BertopsError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]  # trained vocabularies get ids 0..4 in this order


def _bert_pipeline(model, lowercase: bool) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers

    tok = Tokenizer(model)
    # strip_accents=None follows lowercase, as in the original BERT (uncased strips accents)
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _finish(tok: Tokenizer) -> Tokenizer:
    """Mark BERT's special tokens and add the "[CLS] A [SEP] B [SEP]" template with type ids."""
    from tokenizers import processors

    tok.add_special_tokens(SPECIAL_TOKENS)

    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, tok.token_to_id(CLS)), (SEP, tok.token_to_id(SEP))],
    )
    return tok


def _is_punctuation(ch: str) -> bool:
    """BERT's definition (BertPreTokenizer splits these off as one-character words)."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _continuation_tokens(texts: Iterable[str], normalizer) -> list[str]:
    """"##c" for every character c that can occur inside a word of the normalized corpus (sorted).

    Normalizes each distinct character rather than the text (10x faster): BertNormalizer works
    character by character, except lowercase "Σ", which is "ς" at the end of a word.
    """
    raw: set[str] = set()
    for text in texts:
        raw.update(text)
    chars: set[str] = set()
    for c in raw:
        chars.update(normalizer.normalize_str(c))
    if "σ" in chars:
        chars.add("ς")
    return [f"##{c}" for c in sorted(chars) if not c.isspace() and not _is_punctuation(c)]


def train_wordpiece(texts: Callable[[], Iterable[str]], vocab_size: int = 8000,
                    min_frequency: int = 2, limit_alphabet: int = 1000,
                    lowercase: bool = True) -> Tokenizer:
    """Train a WordPiece vocabulary; `texts()` streams the corpus (it is read twice).

    Deterministic: the `tokenizers` trainer gives the "##c" continuation characters ids in hash-map
    order, and those ids break ties between equally frequent merges, so two runs on the same text
    can differ (huggingface/tokenizers#1794, open). Registering every "##c" up front, sorted, as a
    trainer special token fixes their ids; the final model keeps them as ordinary vocabulary
    entries (rebuilt from the vocab below, so only BERT's five tokens are special).
    """
    from tokenizers import models, trainers

    tok = _bert_pipeline(models.WordPiece(unk_token=UNK), lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, limit_alphabet=limit_alphabet,
        special_tokens=SPECIAL_TOKENS + _continuation_tokens(texts(), tok.normalizer),
        continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(texts(), trainer=trainer)
    vocab = tok.get_vocab()
    if len(vocab) <= len(SPECIAL_TOKENS):
        raise BertopsError("tokenizer training produced an empty vocabulary: is the corpus empty?")
    return _finish(_bert_pipeline(models.WordPiece(vocab, unk_token=UNK), lowercase))


def wordpiece_from_vocab_file(vocab_file: str | Path, lowercase: bool = True) -> Tokenizer:
    """A BERT tokenizer over an existing vocab.txt (one token per line, id = line number)."""
    from tokenizers import models

    path = Path(vocab_file)
    if not path.is_file():
        raise BertopsError(f"tokenizer.vocab_file {path} does not exist")
    tok = _bert_pipeline(models.WordPiece.from_file(str(path), unk_token=UNK), lowercase)
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise BertopsError(f"{path}: vocabulary lacks the special tokens {missing}")
    return _finish(tok)


def save_tokenizer(tok: Tokenizer, out_dir: str | Path, lowercase: bool = True,
                   model_max_length: int = 512) -> Path:
    """Save as a transformers tokenizer dir (tokenizer.json + config, plus vocab.txt).

    Wrapped as BertTokenizerFast, not PreTrainedTokenizerFast: only the BERT class returns
    token_type_ids for pairs (shared/notes/stack.md).
    """
    from transformers import BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf = BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase,
                           model_max_length=model_max_length)
    hf.save_pretrained(str(out_dir))
    tok.model.save(str(out_dir))  # vocab.txt too, for tools that read BERT's plain vocabulary
    return out_dir


def load_tokenizer(path: str | Path):
    """The saved tokenizer as transformers loads it everywhere else in the pipeline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
