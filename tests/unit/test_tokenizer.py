"""WordPiece tokenizer: training, vocab file, saving as a transformers dir, sentence splitting."""

import hashlib

import pytest

from bertops.errors import BertopsError
from bertops.text.pretraining_data import tokenize_documents
from bertops.text.sentences import split_sentences
from bertops.text.tokenizer import (
    SPECIAL_TOKENS,
    load_tokenizer,
    save_tokenizer,
    train_wordpiece,
    wordpiece_from_vocab_file,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Foxes are quick and clever animals.",
    "Django's QuerySet.filter() returns a new QuerySet. Filtering querysets is lazy.",
    "Elizabeth Bennet walked to Netherfield. Mr. Darcy was surprised to see her there.",
    "Running runners ran quickly; the runner's running shoes were new!",
] * 20


def corpus():
    return iter(CORPUS)


@pytest.fixture(scope="module")
def trained():
    return train_wordpiece(corpus, vocab_size=300, min_frequency=1)


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    return load_tokenizer(save_tokenizer(trained, tmp_path_factory.mktemp("tok") / "tokenizer",
                                         model_max_length=128))


def test_special_tokens_first_and_vocab_size(trained):
    vocab = trained.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert 100 < len(vocab) <= 300
    assert any(t.startswith("##") and len(t) > 3 for t in vocab)  # real subword merges


def test_training_is_deterministic(trained):
    # tokenizers' trainer alone is not (huggingface/tokenizers#1794); ours must be
    again = train_wordpiece(corpus, vocab_size=300, min_frequency=1)
    assert hashlib.sha256(again.to_str().encode()).digest() == \
        hashlib.sha256(trained.to_str().encode()).digest()


def test_saved_tokenizer_returns_token_type_ids_for_pairs(saved):
    enc = saved("The quick fox.", "Darcy ran!")
    tokens = saved.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    first_sep = tokens.index("[SEP]")
    assert enc["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)
    assert saved.model_max_length == 128
    assert saved.mask_token == "[MASK]" and saved.pad_token_id == 0


def test_round_trip_and_lowercase(saved):
    text = "the quick brown fox jumps over the lazy dog."
    assert saved.decode(saved(text.upper())["input_ids"], skip_special_tokens=True) == text
    assert "[UNK]" not in saved.tokenize("filtering querysets")


def test_trained_vocabulary_is_lowercased(trained):
    # The trainer's own normaliser must lowercase: the saved tokenizer lowercases anyway (saving
    # sets do_lower_case), so a cased vocabulary would show only as unreachable "Elizabeth" entries
    # and [UNK]s for every capitalised word seen in training.
    vocab = trained.get_vocab()
    assert not [t for t in vocab if t not in SPECIAL_TOKENS and t != t.lower()]
    assert {"elizabeth", "django", "queryset"} <= set(vocab)
    cased = train_wordpiece(corpus, vocab_size=300, min_frequency=1, lowercase=False).get_vocab()
    assert {"Elizabeth", "Django"} <= set(cased)  # the corpus is cased: the check above can fail


def test_pretraining_ids_are_the_served_tokenizers_ids(trained, saved):
    # tokenize builds the pretraining data with the in-memory tokenizer, while fine-tuning and
    # serving load the saved one: the same text must give the same ids both ways, cased or not.
    texts = ["Elizabeth Bennet walked to NETHERFIELD. Mr. Darcy was surprised to see her there!",
             "Django's QuerySet.filter() RETURNS a new QuerySet. Foxes are QUICK."]
    docs = tokenize_documents(trained, texts)
    assert len(docs) == len(texts)
    for text, doc in zip(texts, docs):
        served = [i for s in split_sentences(text) for i in saved(s, add_special_tokens=False)["input_ids"]]
        assert doc.tokens.tolist() == served
        assert saved.unk_token_id not in served


def test_special_token_in_text_stays_one_token(saved):
    assert saved.tokenize("a [MASK] fox") == ["a", "[MASK]", "fox"]


def test_vocab_file(tmp_path):
    words = ["the", "fox", "quick", "##ly", "run", "##ning", ".", "!"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    tok = wordpiece_from_vocab_file(vocab, lowercase=True)
    assert tok.get_vocab_size() == 5 + len(words)
    hf = load_tokenizer(save_tokenizer(tok, tmp_path / "out"))
    enc = hf("The fox running quickly!", "Zebra.")
    assert hf.convert_ids_to_tokens(enc["input_ids"]) == [
        "[CLS]", "the", "fox", "run", "##ning", "quick", "##ly", "!", "[SEP]", "[UNK]", ".", "[SEP]"]
    assert enc["token_type_ids"] == [0] * 9 + [1] * 3
    assert (tmp_path / "out" / "vocab.txt").read_text().split("\n")[:6] == \
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]


def test_vocab_file_errors(tmp_path):
    with pytest.raises(BertopsError, match="does not exist"):
        wordpiece_from_vocab_file(tmp_path / "nope.txt")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[UNK]\nthe\n")
    with pytest.raises(BertopsError, match="special tokens"):
        wordpiece_from_vocab_file(vocab)


def test_empty_corpus_is_an_error():
    with pytest.raises(BertopsError, match="empty"):
        train_wordpiece(lambda: iter([]), vocab_size=100)


def test_sentences_split_and_paragraphs_are_boundaries():
    text = "First sentence here. Second one, Mr. Smith\nsaid. Third!\n\nA heading\n\nLast."
    assert split_sentences(text) == [
        "First sentence here.", "Second one, Mr. Smith said.", "Third!", "A heading", "Last."]
    assert split_sentences("  \n\n ") == []
