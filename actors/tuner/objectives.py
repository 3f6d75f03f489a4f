"""What candidates are compared on: the unweighted validation objective, and alignment.

    s = score(segment.metrics)    # Score(objective=…, diagonality=…)

The objective is the trainer's ``val_objective`` (mel MSE after the postnet + plain gate
BCE on the fixed validation set): no tunable loss weight enters it, so turning a weight
down cannot make a candidate look better (DESIGN.md section 5). When the trainer keeps
averaged weights (``ema_decay > 0``) the averaged model's numbers (``ema_*``) are used:
they are less sensitive to where the last few noisy steps left the raw weights.
A missing or non-finite objective scores +inf (it can never win).

How the two numbers are read from a segment's metrics (``read_result``), the champion's
curve and the training phase are read-only state queries: ``state/queries.py``.

Imports the standard library and ``state`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ...state.queries import read_result


@dataclass(frozen=True, slots=True)
class Score:
    objective: float
    diagonality: float


def score(metrics: Mapping[str, float]) -> Score:
    objective, diagonality = read_result(metrics)
    return Score(objective=objective, diagonality=diagonality)
