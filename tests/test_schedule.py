"""Learning-rate schedules, in particular the paper's divide-by-10-on-plateau rule."""
from __future__ import annotations

import math

import pytest

from nin.train.schedule import Schedule


def test_paper_rule_drops_twice_then_stops() -> None:
    s = Schedule("paper", epochs=100, steps_per_epoch=10, patience=2, min_delta=0.5)
    errors = [50, 40, 39.8, 39.9,  # epochs 2 and 3 gain less than 0.5 over the best (40): divide after epoch 3
              39.7, 30, 29, 29.9, 28.8,  # 29.9 and 28.8 do not beat 29 - 0.5: divide after epoch 8
              20, 20, 20]                # two more epochs without a gain after the second drop: stop
    factors = []
    for epoch, err in enumerate(errors):
        factors.append(s.factor(epoch))
        s.end_epoch(epoch, err)
        if s.finished:
            break
    assert s.drops == [3, 8]
    assert factors[:4] == [1.0] * 4 and factors[4] == pytest.approx(0.1) and factors[8] == pytest.approx(0.1)
    assert factors[9] == pytest.approx(0.01)
    assert s.finished and epoch == 11


def test_paper_rule_state_round_trip() -> None:
    a = Schedule("paper", 10, 5, patience=1)
    for e, err in enumerate([5.0, 5.0, 4.0]):
        a.end_epoch(e, err)
    b = Schedule("paper", 10, 5, patience=1)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() and b.factor(3) == a.factor(3)


def test_step_cosine_onecycle_warmup() -> None:
    step = Schedule("step", 10, 4, milestones=[3, 6], gamma=0.5)
    assert [step.factor(e) for e in (0, 3, 6, 9)] == [1.0, 0.5, 0.25, 0.25]
    cos = Schedule("cosine", 10, 4)
    assert cos.factor(0) == 1.0 and cos.factor(5) == pytest.approx(0.5) and cos.factor(9, 3) > 0
    one = Schedule("onecycle", 8, 4)
    assert one.factor(0) == pytest.approx(0.04) and one.factor(2) == pytest.approx(1.0) and one.factor(5) == pytest.approx(0.5)
    warm = Schedule("constant", 10, 4, warmup_epochs=2)
    assert warm.factor(0, 0) == pytest.approx(1 / 8) and warm.factor(1, 3) == 1.0 and warm.factor(5) == 1.0
    assert all(math.isfinite(Schedule("cosine", 3, 2).factor(e, s)) for e in range(3) for s in range(2))


def test_paper_rule_needs_more_than_min_delta_to_count_an_improvement() -> None:
    """'Beats the best by more than min_delta': a gain of exactly min_delta (0.5 points, exact in binary) is no
    improvement, so with patience 1 the rate drops after it; a gain of 0.75 is one."""
    exact = Schedule("paper", 10, 1, patience=1, min_delta=0.5)
    exact.end_epoch(0, 40.0)
    exact.end_epoch(1, 39.5)
    assert exact.drops == [1]
    more = Schedule("paper", 10, 1, patience=1, min_delta=0.5)
    more.end_epoch(0, 40.0)
    more.end_epoch(1, 39.25)
    assert more.drops == [] and more.best_train_error == 39.25


def test_onecycle_rises_linearly_to_its_peak() -> None:
    """From 1/25 of the rate up to the peak at 25% of training, linearly in the progress (epoch + step / steps):
    at 8 epochs the peak is at epoch 2, so epoch 1 is halfway (0.04 + 0.96 / 2) and step 2 of 4 of epoch 0 an
    eighth of the way."""
    one = Schedule("onecycle", 8, 4)
    assert one.factor(1) == pytest.approx(0.52, rel=1e-12)
    assert one.factor(0, 2) == pytest.approx(0.04 + 0.96 * 0.25, rel=1e-12)
    assert one.factor(7, 2) == pytest.approx(0.5 / 6, rel=1e-12)  # down to zero at the end: 0.5 epoch of 6 left


def test_an_unknown_schedule_is_named() -> None:
    with pytest.raises(ValueError, match="^unknown schedule 'nope'$"):
        Schedule("nope", 10, 4).factor(0)


def test_paper_rule_default_min_delta_is_a_tenth_of_a_point() -> None:
    """The paper's rule as the recipes default it: 0.15 points better is an improvement (no drop at patience 1)."""
    s = Schedule("paper", 10, 1, patience=1)
    s.end_epoch(0, 5.0)
    s.end_epoch(1, 4.85)
    assert s.drops == [] and s.best_train_error == 4.85
