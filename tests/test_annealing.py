import math

import numpy as np
import pytest

from vdsm.annealing import Schedule, cosine_ramp, spline4


def test_cosine_ramp_hand_computed():
    # temp_id 1 -> 10 over the first half of training
    assert cosine_ramp(1, 10, 2, 0.0) == 1
    assert cosine_ramp(1, 10, 2, 0.25) == pytest.approx(5.5)          # midpoint of the half cosine
    assert cosine_ramp(1, 10, 2, 0.125) == pytest.approx(10 + (1 - 10) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_ramp(1, 10, 2, 0.5) == pytest.approx(10)
    assert cosine_ramp(1, 10, 2, 0.9) == 10
    assert cosine_ramp(0.1, 1, 3, 1 / 6) == pytest.approx(0.55)


def test_lr_factor_is_constant_then_a_half_cosine_over_the_last_fraction():
    assert Schedule().lr_factor(0.99) == 1.0                   # default: constant learning rate
    s = Schedule(lr_decay_frac=0.4, lr_end=0.1)
    assert s.lr_factor(0.0) == 1.0 and s.lr_factor(0.6) == 1.0
    assert s.lr_factor(0.8) == pytest.approx(0.55)             # halfway down the last 40%
    assert s.lr_factor(1.0) == pytest.approx(0.1)
    factors = [s.lr_factor(p) for p in np.linspace(0, 1, 51)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_spline_passes_through_its_points_and_is_clipped():
    points = [(0, 30), (0.5, 0.2), (0.8, 0.4), (1, 1)]
    for x, y in points:
        assert spline4(points, x) == pytest.approx(y)
    values = [spline4(points, p) for p in np.linspace(0, 1, 101)]
    assert min(values) >= 0.005 and max(values) <= 80
    assert spline4([(0, 100), (0.3, 90), (0.6, 85), (1, 0.0)], 0.0) == 80
    assert spline4([(0, 100), (0.3, 90), (0.6, 85), (1, 0.0)], 1.0) == 0.005


def test_spline_is_the_quadratic_through_three_points_when_the_fourth_lies_on_it():
    f = lambda x: 2 * x * x - x + 0.5   # noqa: E731
    points = [(x, f(x)) for x in (0, 0.5, 0.8, 1)]
    for p in (0.1, 0.33, 0.65, 0.9):
        assert spline4(points, p) == pytest.approx(f(p))


def test_schedule_factors_for_reference_stage2():
    s = Schedule(temp_id_start=10, temp_id_end=10, start_t=0.1, mid_t1=0.4, mid_t2=0.4, end_t=1)
    f0, f1 = s.factors(0.0), s.factors(1.0)
    assert f0 == pytest.approx({"temp_id": 10, "identity": 0.1, "dynamics": 0.1, "z": 0.1})
    assert f1 == pytest.approx({"temp_id": 10, "identity": 1, "dynamics": 1, "z": 1})
    assert all(v > 0 for v in s.factors(0.37).values())
