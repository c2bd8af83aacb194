"""Every metric against values computed by hand on tiny inputs."""

import pytest

from bertops.evaluate import metrics as m

# --- classification ---------------------------------------------------------------------------

def test_classification_accuracy_and_macro_f1_by_hand():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    out = m.classification_metrics(pred, gold, ["a", "b", "c"])
    assert out["accuracy"] == pytest.approx(4 / 6)
    # a: tp2 fp0 fn1 -> 2*2/(3+2)=0.8 ; b: tp1 fp1 fn1 -> 2/4=0.5 ; c: tp1 fp1 fn0 -> 2/3
    assert out["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_skips_classes_absent_from_gold_and_pred():
    out = m.classification_metrics(["x", "y"], ["x", "x"], ["x", "y", "z"])
    # x: tp1 fp0 fn1 -> 2/3 ; y: tp0 -> 0 ; z: absent everywhere -> skipped
    assert out["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert out["accuracy"] == 0.5


def test_bool_labels_match_their_string_forms():
    labels = [False, True]
    gold = [True, False, True, True]
    pred = ["true", "False", "false", True]
    out = m.classification_metrics(pred, gold, labels)
    assert out["accuracy"] == pytest.approx(3 / 4)
    assert m.confusion_matrix(pred, gold, labels) == [[1, 0], [1, 2]]


def test_confusion_matrix_rows_gold_cols_pred_and_unknown_prediction():
    cm = m.confusion_matrix(["b", "a", "zzz"], ["a", "a", "b"], ["a", "b"])
    assert cm == [[1, 1], [0, 0]]  # the out-of-label prediction is in no column
    assert m.classification_metrics(["b", "a", "zzz"], ["a", "a", "b"], ["a", "b"])["accuracy"] == pytest.approx(1 / 3)


def test_classification_rejects_bad_inputs():
    with pytest.raises(ValueError, match="predictions for"):
        m.classification_metrics(["a"], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="gold label"):
        m.classification_metrics(["a"], ["q"], ["a", "b"])


# --- token classification (seqeval, entity level) ---------------------------------------------

def test_entity_f1_counts_only_exact_boundaries_and_types():
    gold = [["B-class", "I-class", "O", "B-method"], ["O", "B-module", "O"]]
    pred = [["B-class", "O", "O", "B-method"],  # class span cut short: wrong; method right
            ["O", "B-class", "O"]]  # right span, wrong type: wrong
    out = m.token_classification_metrics(pred, gold)
    # gold entities 3, predicted 3, correct 1
    assert out["precision"] == pytest.approx(1 / 3)
    assert out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(1 / 3)


def test_entity_boundaries_adjacent_entities_and_stray_inside_tag():
    gold = [["B-function", "B-function", "O"]]  # two adjacent one-word entities
    pred = [["B-function", "I-function", "O"]]  # one two-word entity: matches neither
    assert m.token_classification_metrics(pred, gold) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # conlleval rule: a leading I- starts an entity, so I-x alone equals B-x
    out = m.token_classification_metrics([["I-setting", "O"]], [["B-setting", "O"]])
    assert out["f1"] == pytest.approx(1.0)


def test_all_O_prediction_scores_zero_not_nan():
    out = m.token_classification_metrics([["O", "O"], ["O"]], [["B-class", "O"], ["O"]])
    assert out == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_token_metrics_partial_credit_precision_vs_recall():
    gold = [["B-class", "O", "B-method", "I-method"]]
    pred = [["B-class", "O", "O", "O"]]
    out = m.token_classification_metrics(pred, gold)
    assert out["precision"] == 1.0 and out["recall"] == 0.5
    assert out["f1"] == pytest.approx(2 / 3)


def test_token_metrics_reject_length_mismatch():
    with pytest.raises(ValueError, match="example 0"):
        m.token_classification_metrics([["O"]], [["O", "O"]])


# --- SQuAD v1.1 -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, norm", [
    ("The Cat!", "cat"),
    ("  an   apple,  a pear ", "apple pear"),
    ("theory", "theory"),  # 'the' only as a whole word
    ("Anne's", "annes"),  # punctuation removed inside words, no space added
    ("the", ""),
    ("U.S.A.", "usa"),
])
def test_normalize_answer(raw, norm):
    assert m.normalize_answer(raw) == norm


def test_squad_exact_match_and_f1_by_hand():
    # pred tokens [big, red, dog], gold [red, dog, house]: common 2 -> P=2/3 R=2/3 F1=2/3
    assert m.squad_f1("a big red dog", "The red dog house") == pytest.approx(2 / 3)
    assert m.squad_exact_match("The Dog.", "dog") == 1.0
    assert m.squad_exact_match("dogs", "dog") == 0.0
    # repeated tokens count with multiplicity: pred [a? no] -> [dog, dog], gold [dog] -> P=1/2 R=1
    assert m.squad_f1("dog dog", "dog") == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_squad_v11_empty_after_normalisation():
    # v1.1 quirk kept on purpose: both empty -> EM 1 but F1 0
    assert m.squad_exact_match("the", "a") == 1.0
    assert m.squad_f1("the", "a") == 0.0
    assert m.squad_f1("", "dog") == 0.0


def test_squad_metrics_max_over_gold_answers_then_mean():
    preds = ["red dog", "cat", ""]
    golds = [["dog", "the red dog"], ["a cat", "kitten"], ["mouse"]]
    out = m.squad_metrics(preds, golds)
    assert out["exact_match"] == pytest.approx((1 + 1 + 0) / 3)
    # ex0: max(F1 vs "dog" = 2/3, vs "red dog" = 1) = 1 ; ex1: 1 ; ex2: 0
    assert out["f1"] == pytest.approx(2 / 3)


# --- dispatch and the one number per task -----------------------------------------------------

def test_task_metrics_dispatch_and_task_score():
    cls = m.task_metrics("pair_classification", [True, False], [True, True], [False, True])
    assert m.task_score("pair_classification", cls) == 0.5
    tok = m.task_metrics("token_classification", [["B-class"]], [["B-class"]])
    assert m.task_score("token_classification", tok) == 1.0
    qa = m.task_metrics("extractive_qa", ["x y"], [["y"]])
    assert m.task_score("extractive_qa", qa) == pytest.approx(2 / 3)
    assert m.task_score("extractive_qa", qa, metric="exact_match") == 0.0
    with pytest.raises(ValueError):
        m.task_metrics("sequence_classification", ["a"], ["a"])  # no labels
    with pytest.raises(ValueError):
        m.task_score("regression", {"f1": 1.0})
