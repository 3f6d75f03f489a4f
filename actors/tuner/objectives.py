"""What candidates are compared on: the unweighted validation objective, and alignment.

    s = score(segment.metrics)    # Score(objective=…, diagonality=…, gate_stop_rate=…)
    need = race_requirement(scores, min_diagonality=0.5, min_gate_stop_rate=0.9)
    need.met_by(s)                # eligible to win

The objective is the trainer's ``val_objective`` (mel MSE after the postnet + plain gate
BCE on the fixed validation set): no tunable loss weight enters it, so turning a weight
down cannot make a candidate look better (DESIGN.md section 5). When the trainer keeps
averaged weights (``ema_decay > 0``) the averaged model's numbers (``ema_*``) are used:
they are less sensitive to where the last few noisy steps left the raw weights.
A missing or non-finite objective scores +inf (it can never win).

A candidate must also be able to speak: its free-running gate stop rate (``fr_gate_stop_rate``,
``trainer/free_running.py``: the share of the validation sentences whose stop gate fired in
time when the model decodes from its own output) must reach ``forks.min_gate_stop_rate``,
or, while no candidate of the decision stops that well, the best one's minus 0.1 (the same
relative rule as the alignment's). A trainer that does not report the rate (a user's own
``train.py``) is not held to it.

How the two numbers are read from a segment's metrics (``read_result``), the champion's
curve and the training phase are read-only state queries: ``state/queries.py``.

Imports the standard library and ``state`` only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ...state.queries import read_gate_stop_rate, read_result


@dataclass(frozen=True, slots=True)
class Score:
    objective: float
    diagonality: float
    gate_stop_rate: float | None = None  # free-running; None when the trainer does not report it


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a candidate needs to be eligible to win a decision."""

    diagonality: float
    gate_stop_rate: float | None = None  # None: not asked (no candidate reports it)

    def met_by(self, s: Score) -> bool:
        if not math.isfinite(s.objective) or s.diagonality < self.diagonality:
            return False
        return self.gate_stop_rate is None or s.gate_stop_rate is None or s.gate_stop_rate >= self.gate_stop_rate

    def shortfall(self, s: Score) -> str:
        """Why ``s`` is not eligible, for a decision's reason ('' when it is)."""
        if s.diagonality < self.diagonality:
            return f" (< required {self.diagonality:.2f})"
        if self.gate_stop_rate is not None and s.gate_stop_rate is not None and s.gate_stop_rate < self.gate_stop_rate:
            return f" (its gate stopped {s.gate_stop_rate:.2f} of the sentences < required {self.gate_stop_rate:.2f})"
        return ""

    def evidence(self) -> dict[str, float]:
        out = {"required_diagonality": round(self.diagonality, 4)}
        if self.gate_stop_rate is not None:
            out["required_gate_stop_rate"] = round(self.gate_stop_rate, 4)
        return out


def score(metrics: Mapping[str, float]) -> Score:
    objective, diagonality = read_result(metrics)
    return Score(objective=objective, diagonality=diagonality, gate_stop_rate=read_gate_stop_rate(metrics))


def race_requirement(
    scores: Iterable[Score], min_diagonality: float, min_gate_stop_rate: float, incumbent: Score | None = None
) -> Requirement:
    """What a candidate of a race needs to win: the alignment of the reference minus 0.1 while it is
    under ``min_diagonality``, and the stop rate of ``gate_stop_requirement``. The reference is the
    incumbent when the race has one (early in training nothing is aligned), else the best candidate."""
    scores = list(scores)
    ref_diag = incumbent.diagonality if incumbent is not None else max(s.diagonality for s in scores)
    return Requirement(
        diagonality=min(min_diagonality, ref_diag - 0.1),
        gate_stop_rate=gate_stop_requirement(scores, min_gate_stop_rate, incumbent),
    )


def gate_stop_requirement(scores: Iterable[Score], min_rate: float, incumbent: Score | None = None) -> float | None:
    """The free-running stop rate a candidate needs: ``min_rate``, or, while the reference does not
    reach it, the reference's rate minus 0.1. The reference is the incumbent when the race has one
    (as for diagonality: early in training no model stops by its gate, and a challenger need only
    stop no worse than the champion it would replace), else the best reported rate. None if none
    reports one."""
    if incumbent is not None and incumbent.gate_stop_rate is not None:
        return min(min_rate, incumbent.gate_stop_rate - 0.1)
    rates = [s.gate_stop_rate for s in scores if s.gate_stop_rate is not None]
    return min(min_rate, max(rates) - 0.1) if rates else None
