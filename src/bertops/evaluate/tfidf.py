"""A non-neural reference for the classification tasks: TF-IDF + logistic regression.

Word uni- and bigram TF-IDF (sublinear tf) fitted on the train texts only; for a sentence pair
the features are [tfidf(a), tfidf(b), tfidf(a) * tfidf(b)] (the product marks the words the two
share). The inverse regularisation strength C is chosen on the validation records (best task
score, ties: the smaller C), the model is refitted nowhere else, and the test records are only
predicted. Tasks of other types (tokens, QA) have no such baseline ("n/a" in the report).
No I/O: records in, predictions out.
"""

from __future__ import annotations

from collections.abc import Sequence

from bertops.data.tasks import TaskSpec, gold_label

APPLIES_TO = ("sequence_classification", "pair_classification")
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def applies(task_type: str) -> bool:
    return task_type in APPLIES_TO


def _texts(spec: TaskSpec, records: Sequence[dict]) -> list[list[str]]:
    """One list per text field (one for a single text, two for a pair)."""
    return [[str(r.get(f) or "") for r in records] for f in spec.text_fields]


def tfidf_predictions(spec: TaskSpec, train: Sequence[dict], validation: Sequence[dict],
                      test: Sequence[dict], c_grid: Sequence[float] = C_GRID) -> dict:
    """{"pred": test predictions (predict_split's form), "C": the chosen C,
    "validation": {C: validation score}} for a classification task."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from bertops.evaluate.metrics import task_metrics, task_score

    if not applies(spec.type):
        raise ValueError(f"task {spec.name!r}: TF-IDF baseline applies to {APPLIES_TO}, not {spec.type}")
    if not train or not validation:
        raise ValueError(f"task {spec.name!r}: TF-IDF baseline needs train and validation records")
    labels = list(spec.labels)
    y_train = [labels.index(gold_label(spec, r)) for r in train]
    val_gold = [gold_label(spec, r) for r in validation]
    train_fields = _texts(spec, train)
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, lowercase=True)
    vec.fit([t for field in train_fields for t in field])

    def features(fields: list[list[str]]):
        mats = [vec.transform(f) for f in fields]
        if len(mats) == 2:
            mats.append(mats[0].multiply(mats[1]))
        return sp.hstack(mats).tocsr()

    x_train, x_val, x_test = features(train_fields), features(_texts(spec, validation)), features(_texts(spec, test))
    scores: dict[float, float] = {}
    best_c, best_model, best = None, None, -1.0
    for c in c_grid:
        if len(set(y_train)) < 2:  # one class in train: LogisticRegression refuses; predict it
            break
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit(x_train, y_train)
        pred = [labels[int(i)] for i in model.predict(x_val)]
        s = task_score(spec.type, task_metrics(spec.type, pred, val_gold, labels), spec.metric)
        scores[c] = s
        if s > best:
            best_c, best_model, best = c, model, s
    if best_model is None:
        return {"pred": [labels[y_train[0]]] * len(test), "C": None, "validation": {}}
    return {"pred": [labels[int(i)] for i in best_model.predict(x_test)], "C": best_c, "validation": scores}
