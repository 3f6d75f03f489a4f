"""What candidates are compared on: the unweighted validation objective, and alignment.

    s = score(segment.metrics)    # Score(objective=…, diagonality=…)

The objective is the trainer's ``val_objective`` (mel MSE after the postnet + plain gate
BCE on the fixed validation set): no tunable loss weight enters it, so turning a weight
down cannot make a candidate look better (DESIGN.md section 5). When the trainer keeps
averaged weights (``ema_decay > 0``) the averaged model's numbers (``ema_*``) are used:
they are less sensitive to where the last few noisy steps left the raw weights.
A missing or non-finite objective scores +inf (it can never win).

Imports the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

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
