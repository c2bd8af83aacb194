"""The report: seed aggregation, the bootstrap verdict, markdown rows, PNG/CSV files."""

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


BOOT = {"level": 0.95, "n_boot": 500,
        "tasks": {"sentiment": {"difference": 0.2, "low": 0.05, "high": 0.3},
                  "code-entities": {"difference": 0.01, "low": -0.02, "high": 0.04}},
        "mean": {"difference": 0.105, "low": 0.02, "high": 0.16}}


def test_verdict_from_the_bootstrap_interval():
    v = r.verdict(BOOT, list(TYPES) + ["qa"], majority={"sentiment": 0.5})
    assert v["tasks"]["sentiment"] == {"difference": 0.2, "ci_low": 0.05, "ci_high": 0.3, "outcome": "win",
                                       "majority": 0.5}
    assert v["tasks"]["code-entities"]["outcome"] == "tie"  # the interval holds 0
    assert v["tasks"]["qa"] == {"outcome": "n/a"}  # not bootstrapped (e.g. a macro-F1 task)
    assert (v["wins"], v["ties"], v["losses"]) == (1, 1, 0)
    assert v["mean_score"] == {"difference": 0.105, "ci_low": 0.02, "ci_high": 0.16, "outcome": "win",
                               "tasks": ["sentiment", "code-entities"]}
    loss = {**BOOT, "tasks": {"sentiment": {"difference": -0.2, "low": -0.3, "high": -0.01}}}
    assert r.verdict(loss, ["sentiment"])["tasks"]["sentiment"]["outcome"] == "loss"


def test_rendered_report_has_one_row_per_model_with_mean_std():
    aggs = {"pretrained": r.aggregate_runs([_run(0.8, 0.4), _run(0.6, 0.2)], TYPES),
            "majority": r.aggregate_runs([_run(0.5, 0.0)], TYPES),
            "tfidf": {"sentiment": r.aggregate_runs([_run(0.55, 0.0)], TYPES)["sentiment"]}}
    selection = {"pretrained": {"chosen": 1e-3, "grid": [{"lr": 1e-3, "validation_score": 0.61},
                                                         {"lr": 2e-3, "validation_score": 0.6}]},
                 "majority": {"chosen": 2e-3, "grid": [{"lr": 1e-3, "validation_score": 0.4},
                                                       {"lr": 2e-3, "validation_score": 0.5}]}}
    md = r.render_report(aggs, list(TYPES), primary={"sentiment": "accuracy", "code-entities": "f1"},
                         notes=["seed policy here"], verdicts=r.verdict(BOOT, list(TYPES)),
                         lr_selection=selection, random_init="majority", plots=["x/confusion_sentiment.png"])
    lines = md.splitlines()
    row = next(line for line in lines if line.startswith("| pretrained | 0.700"))
    assert row == "| pretrained | 0.700 ± 0.141 | 0.300 ± 0.141 | 0.500 ± 0.141 | 2 |"
    assert "| majority | 0.500 | 0.000 | 0.250 | 1 |" in lines
    assert "| tfidf | 0.550 | n/a | n/a | 1 |" in lines  # a row for the tasks it applies to
    assert "| model | sentiment (accuracy) | code-entities (f1) | mean score | runs |" in lines
    assert "seed policy here" in lines
    assert "![confusion_sentiment](plots/confusion_sentiment.png)" in lines
    assert "| sentiment | 0.700 ± 0.141 | 0.500 | +0.200 | [+0.050, +0.300] | win |" in lines
    assert "| code-entities | 0.300 ± 0.141 | 0.000 | +0.010 | [-0.020, +0.040] | tie |" in lines
    assert "| **mean score** | 0.500 ± 0.141 | 0.250 | +0.105 | [+0.020, +0.160] | win |" in lines
    assert any(line.startswith("**Pretrained vs random-init: 1 wins, 1 ties, 0 losses") for line in lines)
    assert "| encoder | lr 0.001 | lr 0.002 | chosen |" in lines
    assert "| pretrained | **0.610** | 0.600 | 0.001 |" in lines
    assert "| majority | 0.400 | **0.500** | 0.002 |" in lines
    assert "| model | accuracy | macro_f1 |" in lines
    with_floor = r.verdict(BOOT, list(TYPES), majority={"sentiment": 0.6, "code-entities": 0.0})
    md2 = r.render_report(aggs, list(TYPES), primary={}, verdicts=with_floor, random_init="majority")
    assert "| sentiment | 0.700 ± 0.141 | 0.500 | +0.200 | [+0.050, +0.300] | 0.600 | win |" in md2.splitlines()
    assert "Learning rate per encoder" not in md2


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
