"""pretrain.max_time: the budget schedule reaches zero at the deadline, on a fake clock (no sleeping),
and the elapsed training time survives a checkpoint (a resumed run continues the same schedule)."""

from __future__ import annotations

import pytest
import torch

from bertops.config import load_params, parse_duration
from bertops.train.pretrain_schedule import BudgetSchedule, TrainingClock, budget_lr_factor, over_budget


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_parse_duration():
    assert parse_duration(None) is None
    assert parse_duration(420) == parse_duration("420") == parse_duration("7:00") == 420.0
    assert parse_duration("01:02:03.5") == 3723.5
    for bad in ("x", "1::2", 0, -5, "1:2:3:4", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_max_time_param_accepts_hh_mm_ss(tmp_path):
    params = load_params("params.yaml", {"pretrain.max_time": "00:07:00"})
    assert params.pretrain.max_time == 420.0
    assert load_params("params.yaml", {"pretrain.max_time": None}).pretrain.max_time is None


def test_factor_warms_up_then_reaches_zero_at_max_time():
    f = lambda step, t: budget_lr_factor(step, t, warmup_steps=10, max_steps=10_000, max_time=100.0)  # noqa: E731
    assert f(0, 0.0) == 0.0
    assert f(5, 1.0) == pytest.approx(0.5)  # warm-up by steps
    assert f(20, 50.0) == pytest.approx(0.5)  # halfway through the time budget
    assert f(20, 99.0) == pytest.approx(0.01)
    assert f(20, 100.0) == 0.0 and f(20, 250.0) == 0.0  # zero at (and after) the deadline
    # max_steps comes first: the schedule follows whichever budget is further along
    assert budget_lr_factor(75, 10.0, 0, 100, 100.0) == pytest.approx(0.25)
    # no time budget: steps only
    assert budget_lr_factor(75, 1e9, 0, 100, None) == pytest.approx(0.25)


def test_decay_fraction_holds_the_peak_then_decays_to_zero_over_the_last_share():
    f = lambda step, t: budget_lr_factor(step, t, 10, 10_000, 100.0, decay_fraction=0.25)  # noqa: E731
    assert f(5, 1.0) == pytest.approx(0.5)  # the warm-up is unchanged
    assert f(20, 50.0) == 1.0 and f(20, 75.0) == 1.0  # the peak holds for the first 75%
    assert f(20, 87.5) == pytest.approx(0.5)  # then linear: half-way through the last quarter
    assert f(20, 100.0) == 0.0
    # 1.0 is the plain linear decay
    assert budget_lr_factor(20, 50.0, 10, 10_000, 100.0, 1.0) == budget_lr_factor(20, 50.0, 10, 10_000, 100.0)


def test_a_step_budget_with_decay_fraction_follows_it():
    """Without max_time the module keeps transformers' linear schedule, unless decay_fraction < 1."""
    from bertops.train.pretrain_module import BertPretrainingModule

    config = {"vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 16, "max_position_embeddings": 16}
    lrs = {}
    for frac in (1.0, 0.5):
        module = BertPretrainingModule(config, learning_rate=1.0, warmup_steps=0, max_steps=100,
                                       decay_fraction=frac)
        sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
        opt = sched.optimizer
        lrs[frac] = []
        for _ in range(100):
            lrs[frac].append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    assert lrs[1.0][40] == pytest.approx(0.6) and lrs[1.0][75] == pytest.approx(0.25)
    assert lrs[0.5][40] == 1.0 and lrs[0.5][75] == pytest.approx(0.5) and lrs[0.5][99] == pytest.approx(0.02)


def test_schedule_on_a_fake_clock_reaches_zero_at_the_deadline():
    fake = FakeClock()
    clock = TrainingClock(fake)
    opt = _optimizer(2e-3)
    sched = BudgetSchedule(opt, warmup_steps=4, max_steps=10_000, max_time=60.0, clock=clock)
    clock.start()
    lrs = []
    for _ in range(30):  # each step "takes" 2 s
        fake.now += 2.0
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    # steps 1..4: warm-up; then the decay follows the clock: at 60 s (step 30) the lr is 0
    assert lrs[3] == pytest.approx(2e-3 * min(1.0, 1 - 8 / 60))
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == 0.0 and lrs[-2] == pytest.approx(2e-3 * 2 / 60)
    assert over_budget(clock, 60.0) and not over_budget(clock, 61.0) and not over_budget(clock, None)
    clock.stop()  # training ended: the final evaluation does not count
    fake.now += 500.0
    assert clock.elapsed() == 60.0


def test_resume_keeps_elapsed_time_and_the_schedule():
    """A run stopped at 20 s and resumed in a new process (a new clock that reads another time)
    continues from 20 s: the same learning rates as the uninterrupted run."""
    def run(steps, clock, sched, opt, fake):
        out = []
        for _ in range(steps):
            fake.now += 3.0
            opt.step()
            sched.step()
            out.append(opt.param_groups[0]["lr"])
        return out

    fake = FakeClock()
    ref_clock = TrainingClock(fake)
    ref_opt = _optimizer()
    ref_sched = BudgetSchedule(ref_opt, 2, 1000, 45.0, ref_clock)
    ref_clock.start()
    reference = run(15, ref_clock, ref_sched, ref_opt, fake)
    assert reference[-1] == 0.0

    fake1 = FakeClock(5.0)
    clock1, opt1 = TrainingClock(fake1), _optimizer()
    sched1 = BudgetSchedule(opt1, 2, 1000, 45.0, clock1)
    clock1.start()
    first = run(7, clock1, sched1, opt1, fake1)
    saved = {"elapsed": clock1.elapsed(), "sched": sched1.state_dict(), "opt": opt1.state_dict()}
    assert saved["elapsed"] == 21.0 and "training_clock" not in saved["sched"]

    fake2 = FakeClock(99_999.0)  # another process: the raw clock means nothing across runs
    clock2, opt2 = TrainingClock(fake2), _optimizer()
    sched2 = BudgetSchedule(opt2, 2, 1000, 45.0, clock2)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    clock2.restore(saved["elapsed"])
    assert clock2.elapsed() == 21.0
    clock2.start()
    second = run(8, clock2, sched2, opt2, fake2)
    assert first + second == pytest.approx(reference)


def test_module_checkpoint_carries_elapsed_time_and_tokens():
    from bertops.model.presets import bert_config
    from bertops.train.pretrain_module import BertPretrainingModule

    config = bert_config("tiny", 64, {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32,
                                      "num_hidden_layers": 1}).to_dict()
    fake = FakeClock()
    module = BertPretrainingModule(config, max_time=100.0, dropout=0.0)
    module.training_clock = TrainingClock(fake)
    module.training_clock.start()
    fake.now += 42.5
    module.tokens_seen, module.positions_seen = 1000, 1280
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)

    resumed = BertPretrainingModule(config, max_time=100.0, dropout=0.0)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.training_clock.elapsed() == 42.5
    assert resumed.tokens_reached() == 1000 and resumed.positions_seen == 1280


def test_pretraining_dropout_is_not_saved_in_the_config():
    """pretrain.dropout turns dropout off for pretraining only: fine-tuning builds its encoder from
    config.json, which keeps the config's rates."""
    from bertops.model.presets import bert_config
    from bertops.train.pretrain_module import BertPretrainingModule

    config = bert_config("tiny", 64, {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32,
                                      "num_hidden_layers": 1})
    module = BertPretrainingModule(config.to_dict(), dropout=0.0)
    ps = {m.p for m in module.model.modules() if isinstance(m, torch.nn.Dropout)}
    assert ps == {0.0}
    assert module.model.config.hidden_dropout_prob == config.hidden_dropout_prob == 0.1
    assert module.model.config.attention_probs_dropout_prob == 0.1
    default = BertPretrainingModule(config.to_dict())
    assert {m.p for m in default.model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
