"""Metric series aggregates: known values, NaN handling, re-reported steps, and replay determinism."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smart_tuner.actors.store.series import Series


def series(*points: tuple[int, float]) -> Series:
    s = Series()
    for step, value in points:
        s.add(step, value)
    return s


def test_aggregates_on_known_values() -> None:
    s = series((10, 4.0), (20, 3.0), (30, 2.0), (40, 1.0))
    assert s.last == 1.0 and s.best == (40, 1.0) and len(s) == 4
    assert s.median(2) == 1.5 and s.median(100) == 2.5
    assert s.slope(4) == pytest.approx(-0.1)  # one unit every 10 steps
    assert s.ema(0.0) == 1.0  # no memory: the last value
    assert s.ema(0.5) == pytest.approx((4 * 0.125 + 3 * 0.25 + 2 * 0.5 + 1 * 1) / (0.125 + 0.25 + 0.5 + 1))


def test_non_finite_values_are_kept_but_never_aggregated() -> None:
    s = series((1, 1.0), (2, math.nan), (3, 3.0), (4, math.inf))
    assert s.non_finite == 2 and math.isinf(s.last or 0) and s.last_finite == 3.0
    assert s.best == (1, 1.0) and s.median(10) == 2.0 and s.slope(10) == pytest.approx(1.0)
    assert series((1, math.nan)).ema(0.9) is None and series().best is None


def test_a_step_reported_again_replaces_the_old_point() -> None:
    s = series((5, 2.0), (1, 9.0), (3, 4.0), (5, 1.5))
    assert s.steps == [1, 3, 5] and s.values == [9.0, 4.0, 1.5]


def test_spike_compares_the_latest_value_with_the_median_before_it() -> None:
    calm = series(*[(i, 1.0 + 0.01 * (i % 3)) for i in range(20)])
    assert calm.spike(3.0, 10) is None
    calm.add(20, 5.0)
    assert calm.spike(3.0, 10) == pytest.approx(5.0 / 1.01)
    assert series((1, 1.0)).spike(3.0, 10) is None  # no history
    assert series((1, -1.0), (2, 5.0)).spike(3.0, 10) is None  # a non-positive base says nothing


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="ema decay must lie in"):
        series((1, 1.0)).ema(1.0)
    assert series((1, 1.0)).slope(10) is None and series((1, 1.0), (1, 2.0)).slope(10) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.floats(allow_nan=True, allow_infinity=True, width=32)), max_size=40))
def test_order_of_arrival_does_not_matter_once_steps_are_unique(points: list[tuple[int, float]]) -> None:
    unique = dict(points)  # last report of each step wins, as in Series.add
    a = series(*unique.items())
    items = list(unique.items())
    random.Random(len(items)).shuffle(items)
    b = series(*items)
    assert a.steps == b.steps == sorted(unique)
    for x, y in [(a.median(5), b.median(5)), (a.slope(7), b.slope(7)), (a.ema(0.8), b.ema(0.8))]:
        assert x == y or (x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12))
    finite = [v for v in unique.values() if math.isfinite(v)]
    if finite:
        assert a.best is not None and a.best[1] == min(finite)
        assert a.median(10**6) == statistics.median(finite)
