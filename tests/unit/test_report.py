"""The report: seed aggregation, verdict rule, markdown rows, PNG/CSV files."""

import csv
import statistics

import pytest

from bertops.evaluate import report as r

TYPES = {"sentiment": "sequence_classification", "code-entities": "token_classification"}


def _run(acc, f1):
    return {"sentiment": {"accuracy": acc, "macro_f1": acc - 0.1},
            "code-entities": {"precision": f1, "recall": f1, "f1": f1}}


def test_summarize_uses_sample_std_and_n():
    s = r.summarize([0.5, 0.7, 0.9])
    assert s["mean"] == pytest.approx(0.7)
    assert s["std"] == pytest.approx(0.2)  # ddof=1: sqrt((0.04+0+0.04)/2)
    assert s["n"] == 3
    assert r.summarize([0.4]) == {"mean": 0.4, "std": 0.0, "n": 1}
    with pytest.raises(ValueError):
        r.summarize([])


def test_format_mean_std():
    assert r.format_mean_std({"mean": 0.81234, "std": 0.0126, "n": 3}) == "0.812 ± 0.013"
    assert r.format_mean_std({"mean": 0.5, "std": 0.0, "n": 1}) == "0.500"


def test_aggregate_runs_scores_and_mean_score():
    agg = r.aggregate_runs([_run(0.8, 0.4), _run(0.6, 0.2)], TYPES)
    assert agg["sentiment"]["accuracy"]["mean"] == pytest.approx(0.7)
    assert agg["sentiment"]["macro_f1"]["mean"] == pytest.approx(0.6)
    assert agg["sentiment"]["score"]["mean"] == pytest.approx(0.7)  # accuracy is the score
    assert agg["code-entities"]["score"]["std"] == pytest.approx(statistics.stdev([0.4, 0.2]))
    # mean score per run: (0.8+0.4)/2=0.6 and (0.6+0.2)/2=0.4
    assert agg["mean_score"]["mean"] == pytest.approx(0.5)
    assert agg["mean_score"]["std"] == pytest.approx(statistics.stdev([0.6, 0.4]))
    with pytest.raises(ValueError, match="no metrics for tasks"):
        r.aggregate_runs([{"sentiment": {"accuracy": 1.0}}], TYPES)


def test_aggregate_honours_task_metric_override():
    agg = r.aggregate_runs([_run(0.8, 0.4)], TYPES, {"sentiment": "macro_f1"})
    assert agg["sentiment"]["score"]["mean"] == pytest.approx(0.7)


def test_verdict_rule():
    pre = {"mean": 0.80, "std": 0.02, "n": 3}
    assert r.verdict(pre, {"mean": 0.70, "std": 0.05, "n": 3})["pretrained_beats_random"] == "yes"
    v = r.verdict(pre, {"mean": 0.77, "std": 0.04, "n": 3})
    assert v["pretrained_beats_random"] == "no"
    assert v["difference"] == pytest.approx(0.03) and v["max_std"] == pytest.approx(0.04)
    assert r.verdict({"mean": 0.9, "std": 0, "n": 1}, {"mean": 0.1, "std": 0, "n": 1})[
        "pretrained_beats_random"] == "n/a"



def test_verdict_needs_the_pretrained_model_above_the_majority_floor():
    # both collapsed to a constant class: zero spread, a 'gain' that says nothing about pretraining
    pre, rnd = {"mean": 0.675, "std": 0.0, "n": 3}, {"mean": 0.325, "std": 0.0, "n": 3}
    assert r.verdict(pre, rnd)["pretrained_beats_random"] == "yes"
    v = r.verdict(pre, rnd, floor=0.675)
    assert v["pretrained_beats_random"] == "no" and v["above_majority"] is False and v["majority"] == 0.675
    assert r.verdict(pre, rnd, floor=0.5)["pretrained_beats_random"] == "yes"


def test_rendered_report_has_one_row_per_model_with_mean_std():
    aggs = {"pretrained": r.aggregate_runs([_run(0.8, 0.4), _run(0.6, 0.2)], TYPES),
            "majority": r.aggregate_runs([_run(0.5, 0.0)], TYPES)}
    verdicts = {t: r.verdict(aggs["pretrained"][t]["score"], aggs["majority"][t]["score"]) for t in TYPES}
    md = r.render_report(aggs, list(TYPES), primary={"sentiment": "accuracy", "code-entities": "f1"},
                         notes=["seed policy here"], verdicts=verdicts, random_init="majority",
                         plots=["x/confusion_sentiment.png"])
    lines = md.splitlines()
    row = next(line for line in lines if line.startswith("| pretrained | 0.700"))
    assert row == "| pretrained | 0.700 ± 0.141 | 0.300 ± 0.141 | 0.500 ± 0.141 | 2 |"
    assert "| majority | 0.500 | 0.000 | 0.250 | 1 |" in lines
    assert "| model | sentiment (accuracy) | code-entities (f1) | mean score | runs |" in lines
    assert "seed policy here" in lines
    assert "![confusion_sentiment](plots/confusion_sentiment.png)" in lines
    assert "| sentiment | 0.700 ± 0.141 | 0.500 | +0.200 | 0.141 | n/a |" in lines
    with_floor = {t: r.verdict(aggs["pretrained"][t]["score"], aggs["majority"][t]["score"], 0.6) for t in TYPES}
    md2 = r.render_report(aggs, list(TYPES), primary={}, verdicts=with_floor, random_init="majority")
    assert "| sentiment | 0.700 ± 0.141 | 0.500 | +0.200 | 0.141 | 0.600 | n/a |" in md2.splitlines()
    assert "| model | accuracy | macro_f1 |" in lines


def test_confusion_matrix_png_written(tmp_path):
    p = r.plot_confusion_matrix([[3, 1], [0, 2]], [False, True], "wic", tmp_path / "plots" / "cm.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000


def test_confusion_matrix_png_shows_the_counts(tmp_path, monkeypatch):
    # rows = gold, columns = predicted; an asymmetric matrix, so a transposed or mislabelled plot fails
    import matplotlib.image
    import numpy as np

    cm = [[7, 0, 2], [1, 4, 0], [0, 3, 9]]
    labels = ["business", "sport", "tech"]
    figures = []
    save = r._save
    monkeypatch.setattr(r, "_save", lambda fig, path: figures.append(fig) or save(fig, path))
    png = r.plot_confusion_matrix(cm, labels, "topic", tmp_path / "cm.png")
    (fig,) = figures
    ax = fig.axes[0]
    assert np.asarray(ax.images[0].get_array()).tolist() == cm
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(i, j): str(cm[i][j]) for i in range(3) for j in range(3)}
    assert [t.get_text() for t in ax.get_xticklabels()] == labels == [t.get_text() for t in ax.get_yticklabels()]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "gold")
    # and the written picture: each cell's colour (read from the PNG, beside its number) is darker
    # the larger its count
    pixels = matplotlib.image.imread(png)
    height = pixels.shape[0]
    lightness = {}
    for i in range(3):
        for j in range(3):
            x, y = ax.transData.transform((j - 0.35, i - 0.35))  # inside the cell, off the text
            lightness[(i, j)] = float(pixels[int(round(height - y)), int(round(x)), :3].mean())
    by_count = sorted(lightness, key=lambda c: cm[c[0]][c[1]])
    for a, b in zip(by_count, by_count[1:]):
        if cm[a[0]][a[1]] < cm[b[0]][b[1]]:
            assert lightness[a] > lightness[b], (a, b, lightness)


def _write_lightning_csv(path, rows):
    cols = ["epoch", "step", "train/loss", "val/sentiment/accuracy", "val/topic/accuracy"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({c: row.get(c, "") for c in cols})


def test_learning_curves_from_lightning_csv(tmp_path):
    path = tmp_path / "metrics.csv"
    _write_lightning_csv(path, [
        {"epoch": 0, "step": 9, "train/loss": 1.5},
        {"epoch": 0, "step": 19, "train/loss": 1.2, "val/sentiment/accuracy": 0.6},
        {"epoch": 1, "step": 39, "val/sentiment/accuracy": 0.7, "val/topic/accuracy": 0.3},
    ])
    series = r.read_metrics_csv(path)
    assert series["val/sentiment/accuracy"] == [(19.0, 0.6), (39.0, 0.7)]
    assert series["train/loss"] == [(9.0, 1.5), (19.0, 1.2)]
    assert r.task_columns(list(series), "sentiment") == ["val/sentiment/accuracy"]
    assert r.task_columns(["val_code-entities_f1", "val/topical"], "code-entities") == ["val_code-entities_f1"]

    runs = {"pretrained seed 1": series, "random_init seed 1": series}
    png = r.plot_learning_curves(runs, "sentiment", tmp_path / "lc.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000
    assert r.plot_learning_curves(runs, "define-qa", tmp_path / "none.png") is None

    out = r.write_curves_csv(runs, "sentiment", tmp_path / "lc.csv")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert rows[0] == {"run": "pretrained seed 1", "metric": "val/sentiment/accuracy", "step": "19.0", "value": "0.6"}
