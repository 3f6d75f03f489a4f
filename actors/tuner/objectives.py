"""What candidates are compared on: the unweighted validation objective, and alignment.

    s = score(segment.metrics)    # Score(objective=…, diagonality=…)
    curve = champion_curve(state)   # [(round, objective, diagonality)] of each round's winner
    phase_of(curve[1:])             # alignment, learning or fine_tuning

The objective is the trainer's ``val_objective`` (mel MSE after the postnet + plain gate
BCE on the fixed validation set): no tunable loss weight enters it, so turning a weight
down cannot make a candidate look better (DESIGN.md section 5). When the trainer keeps
averaged weights (``ema_decay > 0``) the averaged model's numbers (``ema_*``) are used:
they are less sensitive to where the last few noisy steps left the raw weights.
A missing or non-finite objective scores +inf (it can never win).

The training phase (read by the stop controller's patience, the forks strategy's
cool-down without a step budget and the live view): ``alignment`` while the champion's
diagonality is under 0.9, ``fine_tuning`` once the last three decided rounds gained under
1% together, ``learning`` in between.

Imports the standard library and ``state`` only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...state.model import TunerState

OBJECTIVE = "val_objective"
DIAGONALITY = "diagonality"


@dataclass(frozen=True, slots=True)
class Score:
    objective: float
    diagonality: float


def score(metrics: Mapping[str, float]) -> Score:
    prefix = "ema_" if f"ema_{OBJECTIVE}" in metrics else ""
    objective = float(metrics.get(prefix + OBJECTIVE, math.inf))
    if not math.isfinite(objective):
        objective = math.inf
    diagonality = float(metrics.get(prefix + DIAGONALITY, metrics.get(DIAGONALITY, 0.0)))
    return Score(objective=objective, diagonality=diagonality if math.isfinite(diagonality) else 0.0)


ALIGNED = 0.9
FINE_TUNING_GAIN = 0.01


def champion_curve(state: TunerState) -> list[tuple[int, float, float]]:
    """``(round, objective, diagonality)`` of each decided round's winner, in round order."""
    out = []
    for rnd in state.tuning.rounds:
        if rnd.winner is None:
            continue
        segs = [s for s in state.tuning.segments.values() if s.trial_id == rnd.winner and s.status == "finished"]
        if segs:
            last = max(segs, key=lambda s: s.scheduled_seq)
            sc = score(last.metrics)
            out.append((rnd.round, sc.objective, sc.diagonality))
    return out


def phase_of(curve: Sequence[tuple[int, float, float]]) -> str:
    if not curve or curve[-1][2] < ALIGNED:
        return "alignment"
    if len(curve) >= 4 and curve[-4][1] > 0 and (curve[-4][1] - curve[-1][1]) / curve[-4][1] < FINE_TUNING_GAIN:
        return "fine_tuning"
    return "learning"
