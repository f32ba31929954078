"""PlateauTracker and StabilityGuard as state machines, with resume."""
import math

import pytest
import torch

from qdbev.schedule import PlateauTracker, StabilityGuard, until_plateau


def test_plateau_stops_after_patience_non_improving_evaluations():
    t = PlateauTracker.from_length(until_plateau(2, 10))
    # 0.32 repeats the best: not an improvement; two in a row without improvement -> stop
    assert [t.update(v) for v in (0.30, 0.32, 0.31, 0.32)] == [False, False, False, True]
    assert t.reason == 'plateau' and t.best == 0.32 and t.best_eval == 2 and t.num_evals == 4


def test_plateau_cap_min_mode_min_delta_and_nan():
    t = PlateauTracker(patience=3, cap=3)
    assert [t.update(v) for v in (0.1, 0.2, 0.3)] == [False, False, True] and t.reason == 'cap'
    m = PlateauTracker(patience=1, cap=10, mode='min', min_delta=0.05)
    assert [m.update(v) for v in (1.0, 0.9, 0.87)] == [False, False, True]  # 0.87 is within 0.05 of 0.9
    n = PlateauTracker(patience=2, cap=10)
    assert [n.update(v) for v in (0.3, math.nan, float('inf'))] == [False, False, True]
    assert n.best == 0.3
    with pytest.raises(ValueError, match='patience >= 1'):
        PlateauTracker(patience=0, cap=3)


def test_plateau_resume_continues_identically():
    a = PlateauTracker(3, 20)
    for v in (0.1, 0.3, 0.2):
        a.update(v)
    b = PlateauTracker(3, 20)
    b.load_state_dict(a.state_dict())
    assert [b.update(v) for v in (0.25, 0.29)] == [False, True]
    with pytest.raises(ValueError, match='saved config'):
        PlateauTracker(2, 20).load_state_dict(a.state_dict())


def test_stability_guard_skips_then_rolls_back():
    g = StabilityGuard(max_consecutive=3, lr_factor=0.5)
    seq = [(1.0, 2.0), (math.nan, None), (1.0, math.inf), (0.9, 1.0), (math.nan, None),
           (torch.tensor(float('inf')), None), (torch.tensor([1.0, math.nan]), None), (0.8, None)]
    actions = [g.step(loss, grad).action for loss, grad in seq]
    assert actions == ['ok', 'skip', 'skip', 'ok', 'skip', 'skip', 'rollback', 'ok']
    assert (g.total_bad, g.rollbacks, g.lr_scale, g.consecutive_bad, g.steps) == (5, 1, 0.5, 0, 8)
    for _ in range(2):
        g.step(math.nan)
    d = g.step(math.nan)
    assert (d.action, d.lr_factor, d.lr_scale) == ('rollback', 0.5, 0.25)


def test_stability_guard_grad_threshold_and_resume():
    g = StabilityGuard(max_consecutive=2, lr_factor=0.1, max_grad_norm=100.0)
    assert g.step(1.0, torch.tensor(50.0)).action == 'ok'
    assert g.step(1.0, 150.0).action == 'skip'
    h = StabilityGuard(max_consecutive=2, lr_factor=0.1, max_grad_norm=100.0)
    h.load_state_dict(g.state_dict())
    d = h.step(1.0, 1e6)
    assert d.action == 'rollback' and d.lr_scale == pytest.approx(0.1)
    with pytest.raises(ValueError, match='missing key'):
        h.load_state_dict({'steps': 1})
    with pytest.raises(ValueError, match='lr_factor'):
        StabilityGuard(lr_factor=2.0)
