"""Metric series and the aggregates decisions are made on (the store's pure core).

    s = Series()
    for step, value in observed:
        s.add(step, value)
    s.ema(0.9), s.median(window=20), s.slope(window=50), s.best, s.spike(factor=3.0, window=20)

A series holds ``(step, value)`` points of one metric in one segment or lineage, in step
order (a point at a step already seen replaces it: a re-run segment reports the same
steps again). Non-finite values are kept, because a NaN loss is a fact the guard rails
must see, but they never enter an aggregate: ``last_finite``, ``ema``, ``median``,
``slope`` and ``best`` skip them, and ``non_finite`` counts them.

Every aggregate is a pure function of the points, so replaying the same metric events
rebuilds the same numbers. Imports the standard library only.
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import dataclass, field


@dataclass
class Series:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, value: float) -> None:
        i = bisect.bisect_left(self.steps, step)
        if i < len(self.steps) and self.steps[i] == step:
            self.values[i] = value
        else:
            self.steps.insert(i, step)
            self.values.insert(i, value)

    def __len__(self) -> int:
        return len(self.steps)

    def finite(self, window: int | None = None) -> list[tuple[int, float]]:
        """The last ``window`` finite points (all of them by default), in step order."""
        points = [(s, v) for s, v in zip(self.steps, self.values, strict=True) if math.isfinite(v)]
        return points if window is None else points[-window:]

    @property
    def non_finite(self) -> int:
        return sum(1 for v in self.values if not math.isfinite(v))

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None

    @property
    def last_finite(self) -> float | None:
        points = self.finite(1)
        return points[0][1] if points else None

    @property
    def best(self) -> tuple[int, float] | None:
        """``(step, value)`` of the lowest finite value (the earliest such step on a tie)."""
        points = self.finite()
        return min(points, key=lambda p: (p[1], p[0])) if points else None

    def ema(self, decay: float) -> float | None:
        """Exponential moving average of the finite values, bias-corrected (Adam-style) for short series."""
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must lie in [0, 1), got {decay}")
        avg, weight = 0.0, 0.0
        for _, v in self.finite():
            avg = decay * avg + (1 - decay) * v
            weight = decay * weight + (1 - decay)
        return avg / weight if weight > 0 else None

    def median(self, window: int) -> float | None:
        points = self.finite(window)
        return statistics.median(v for _, v in points) if points else None

    def slope(self, window: int) -> float | None:
        """Least-squares slope (value per step) over the last ``window`` finite points; None under two."""
        points = self.finite(window)
        if len(points) < 2:
            return None
        xs, ys = [float(s) for s, _ in points], [v for _, v in points]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx == 0:
            return None
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx

    def spike(self, factor: float, window: int) -> float | None:
        """How many times the latest finite value exceeds the median of the ``window`` before it.

        Returns the ratio when it is at least ``factor`` (a spike), else None; None too when
        there is no history to compare with or that median is not positive.
        """
        points = self.finite(window + 1)
        if len(points) < 2:
            return None
        *history, (_, latest) = points
        base = statistics.median(v for _, v in history)
        if base <= 0:
            return None
        ratio = latest / base
        return ratio if ratio >= factor else None
