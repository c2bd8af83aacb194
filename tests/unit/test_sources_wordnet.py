"""WordNet data-line parsing and word location, on hand-made data lines."""

from bertops.data.sources import wordnet as wn

LINES = [
    "  1 This software and database is being provided to you, the LICENSEE, by  ",
    "  2 Princeton University.  ",
    '00001740 00 a 01 able 0 005 = 05200169 n 0000 ! 00002098 a 0101 | (usually followed by `to\') '
    'having the necessary means; "able to swim"; "she was able to program her computer"  ',
    "02084071 05 n 02 dog 0 domestic_dog 0 001 @ 02083346 n 0000 | a member of the genus Canis; "
    '"the dog barked all night"; "a domestic dog"; "dogs everywhere"  ',
    '00009999 00 s 01 galore(ip) 0 000 | in great numbers; "apples galore"  ',
]


def synsets():
    return [s for s in (wn.parse_line(line, "noun") for line in LINES) if s]


def test_parse_line_fields():
    able, dog, galore = synsets()
    assert able.id == "noun.00001740" and able.pos == "a" and able.lexname_num == 0
    assert able.definition == "(usually followed by `to') having the necessary means"
    assert able.examples == ("able to swim", "she was able to program her computer")
    assert dog.words == ("dog", "domestic dog") and dog.lexname_num == 5
    assert galore.words == ("galore",)  # adjective marker stripped


def test_licence_header_is_skipped_and_kept(tmp_path):
    assert len(synsets()) == 3
    (tmp_path / "data.noun").write_text("\n".join(LINES) + "\n", encoding="latin-1")
    assert wn.licence_notice(tmp_path).startswith("This software and database")
    assert "00001740" not in wn.licence_notice(tmp_path)


def test_read_synsets_latin1(tmp_path):
    for pos in wn.POS_FILES:
        (tmp_path / f"data.{pos}").write_bytes(
            '00000001 00 n 01 caf\xe9 0 000 | a coffee house; "meet at the caf\xe9"  \n'.encode("latin-1"))
    out = wn.read_synsets(tmp_path)
    assert [s.id for s in out] == ["noun.00000001", "verb.00000001", "adj.00000001", "adv.00000001"]
    assert out[0].words == ("café",)


def test_find_word_whole_words_only():
    assert wn.find_word("dog", "The Dog barked") == 4
    assert wn.find_word("dog", "dogs everywhere") == -1
    assert wn.find_word("dog", "hot-dog stand") == -1
    assert wn.find_word("domestic dog", "a domestic dog") == 2


def test_usages_prefer_longest_lemma_and_skip_unlocated():
    use = {(u.synset.id, u.sentence): u for u in wn.usages(synsets())}
    assert use[("noun.02084071", "a domestic dog")].word == "domestic dog"
    assert use[("noun.02084071", "the dog barked all night")].start == 4
    assert ("noun.02084071", "dogs everywhere") not in use
    assert len(use) == 5
