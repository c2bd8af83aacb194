"""The pretraining run's check against its trivial baselines (bertops.train.pretrain.no_better_than_baselines)."""

from bertops.train.pretrain import no_better_than_baselines

BASELINES = {"baseline_mlm_most_frequent_token_accuracy": 0.043, "baseline_nsp_majority_accuracy": 0.554}


def test_an_encoder_at_both_baselines_gets_a_warning_for_each_objective():
    # the whole-word-masking run that collapsed: MLM 4.4% against 4.3%, NSP at the majority rate
    warnings = no_better_than_baselines({**BASELINES, "mlm_accuracy": 0.044, "nsp_accuracy": 0.554})
    assert len(warnings) == 2
    assert warnings[0].startswith("held-out MLM accuracy 4.4% is not above always predicting the most "
                                  "frequent token (4.3%)")
    assert warnings[1].startswith("held-out NSP accuracy 55.4% is not above always predicting the majority "
                                  "label (55.4%)")
    assert all("pretrain.max_time" in w for w in warnings)


def test_an_encoder_past_the_baselines_gets_none_and_the_margin_is_one_point():
    # make run S's encoder: MLM 17.4%, NSP 81.9%
    assert no_better_than_baselines({**BASELINES, "mlm_accuracy": 0.174, "nsp_accuracy": 0.819}) == []
    # NSP learned, MLM within a point of the baseline: only MLM is named
    only_mlm = no_better_than_baselines({**BASELINES, "mlm_accuracy": 0.052, "nsp_accuracy": 0.70})
    assert len(only_mlm) == 1 and only_mlm[0].startswith("held-out MLM")
    assert no_better_than_baselines({**BASELINES, "mlm_accuracy": 0.054, "nsp_accuracy": 0.70}) == []


def test_missing_metrics_are_not_judged():
    assert no_better_than_baselines({"mlm_accuracy": 0.01, "nsp_accuracy": 0.5}) == []
