"""The TF-IDF + logistic regression reference (bertops.evaluate.tfidf): it learns an easy task and
chooses C on validation only."""

import random

import pytest

from bertops.data.tasks import TaskSpec
from bertops.evaluate import tfidf
from bertops.evaluate.baselines import majority_predictions
from bertops.evaluate.metrics import task_metrics

POS, NEG = ["great", "wonderful", "superb", "lovely"], ["awful", "dreadful", "boring", "terrible"]
FILLER = ["the", "film", "was", "plot", "acting", "and", "quite", "really", "story"]


def _records(n, seed, prefix):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "fresh" if rng.random() < 0.6 else "rotten"  # majority 'fresh' scores ~0.6
        words = rng.sample(FILLER, 4) + [rng.choice(POS if label == "fresh" else NEG)]
        rng.shuffle(words)
        out.append({"id": f"{prefix}{i}", "text": " ".join(words), "label": label})
    return out


def _spec(task_type="sequence_classification", fields=("text",), labels=("rotten", "fresh")):
    from bertops.config import TaskParams

    tp = TaskParams.model_validate({"type": task_type, "path": "unused", "text_fields": list(fields),
                                    "labels": list(labels), "metric": "accuracy"})
    return TaskSpec.from_params("t", tp)


def test_tfidf_beats_majority_on_a_separable_task():
    spec = _spec()
    train, val, test = _records(200, 1, "tr"), _records(60, 2, "va"), _records(100, 3, "te")
    res = tfidf.tfidf_predictions(spec, train, val, test)
    gold = [r["label"] for r in test]
    acc = task_metrics(spec.type, res["pred"], gold, spec.labels)["accuracy"]
    majority = task_metrics(spec.type, majority_predictions(spec, train, test), gold, spec.labels)["accuracy"]
    assert acc >= 0.95 > majority + 0.2
    assert set(res["validation"]) == set(tfidf.C_GRID) and res["C"] in tfidf.C_GRID


def test_c_is_chosen_on_validation_and_test_labels_are_never_read():
    spec = _spec()
    train, val = _records(200, 1, "tr"), _records(60, 2, "va")
    test = [{k: v for k, v in r.items() if k != "label"} for r in _records(50, 3, "te")]  # no labels
    res = tfidf.tfidf_predictions(spec, train, val, test)
    assert len(res["pred"]) == 50
    # the chosen C is the first with the best validation score
    best = max(res["validation"].values())
    assert res["C"] == next(c for c in tfidf.C_GRID if res["validation"][c] == best)
    # flipping every validation label makes the most wrong model the best: C follows validation
    flipped = [{**r, "label": "fresh" if r["label"] == "rotten" else "rotten"} for r in val]
    res2 = tfidf.tfidf_predictions(spec, train, flipped, test)
    assert res2["validation"][res2["C"]] == max(res2["validation"].values())
    assert res2["C"] != res["C"] or len(set(res2["validation"].values())) == 1


def test_pairs_and_what_it_applies_to():
    spec = _spec("pair_classification", ("a", "b"), (False, True))
    rng = random.Random(0)

    def pairs(n, prefix):
        out = []
        for i in range(n):
            w = rng.choice(POS + NEG)
            same = rng.random() < 0.5
            other = w if same else rng.choice([x for x in POS + NEG if x != w])
            out.append({"id": f"{prefix}{i}", "a": f"the {w} film", "b": f"a {other} story", "label": same})
        return out

    train, val, test = pairs(300, "tr"), pairs(80, "va"), pairs(80, "te")
    res = tfidf.tfidf_predictions(spec, train, val, test)
    acc = task_metrics(spec.type, res["pred"], ["true" if r["label"] else "false" for r in test], spec.labels)
    assert acc["accuracy"] >= 0.8  # the product features see the shared word
    assert tfidf.applies("pair_classification") and not tfidf.applies("token_classification")
    with pytest.raises(ValueError, match="applies to"):
        tfidf.tfidf_predictions(_spec_tokens(), train, val, test)


def _spec_tokens():
    from bertops.config import TaskParams

    tp = TaskParams.model_validate({"type": "token_classification", "path": "unused", "labels": ["x"],
                                    "label_field": "ner_tags", "metric": "f1"})
    return TaskSpec.from_params("tok", tp)
