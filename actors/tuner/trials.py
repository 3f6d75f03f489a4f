"""The ``trials`` strategy: classic Optuna trials from scratch, pruned by successive halving.

    TrialsStrategy(settings).decide(state) -> [TrialProposed, RoundPlanned, SegmentScheduled, ...]

The tuner actor calls ``decide``; the round engine (``engine.RoundStrategy``) calls this
module's hooks, ``plan_first_round`` (the race) and ``plan_next_round`` (the champion alone,
on the rest), and decides every rung itself (no incumbent: the best ranked wins).

One round of ``n`` trials (``n_trials``, at most ``MAX_TRIALS``), each trained from the
model's initial weights: the starting hyperparameters and ``n - 1`` proposals of the
configured Optuna sampler. Successive halving with ``ETA`` = 3 (one Hyperband bracket):
every rung keeps the best third (aligned first, then by the unweighted objective), each
rung ``ETA`` times longer than the one before, sized so the whole race spends the step
budget; each dropped trial is a ``TrialPruned`` with the numbers it lost on. The last
survivor becomes the champion; what the rounding left of the budget, it trains on alone.

It is the from-scratch baseline for ``forks``: every candidate pays for its own start.

Imports the standard library, ``protocol``, ``state`` and the tuner package's ``engine``
and ``space`` only: never another strategy module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...protocol import Message
from ...protocol import messages as m
from ...state.model import TunerState
from ...state.queries import steps_spent
from .engine import RoundStrategy, propose_trial
from .space import ask, rebuild_study

ETA = 3
MAX_TRIALS = 27
START = "start"


def rungs(n: int, budget: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Rung lengths and survivors for ``n`` trials racing within ``budget`` steps."""
    keep, alive = [], n
    while alive > 1:
        alive = max(1, alive // ETA)
        keep.append(alive)
    if not keep:
        keep = [1]
    alive_per_rung = [n, *keep[:-1]]
    weight = sum(a * ETA**r for r, a in enumerate(alive_per_rung))
    first = max(1, budget // weight)
    return tuple(first * ETA**r for r in range(len(keep))), tuple(keep)


class TrialsStrategy(RoundStrategy):
    name = "trials"

    def plan_first_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        s = self.settings
        budget = s.budget_steps or 600
        n = max(1, min(s.n_trials, MAX_TRIALS)) if self.space.params else 1
        steps, keep = rungs(n, budget)
        hp = {**{p: announced[p]["default"] for p in self.space.names}, **s.base_hparams}
        out: list[Message] = [propose_trial(0, hp, START, "the starting hyperparameters", {})]
        if n > 1:
            study = rebuild_study(self.space, s.sampler, s.seed, s.n_startup_trials, [])
            for i in range(1, n):
                params, inputs = ask(study, self.space)
                out.append(
                    propose_trial(
                        i,
                        {**hp, **params},
                        s.sampler,
                        f"sampled by {inputs['sampler']}: "
                        + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()),
                        {"inputs": inputs, "outputs": params},
                    )
                )
        trials = tuple(t.trial_id for t in out if isinstance(t, m.TrialProposed))
        plan = m.RoundPlanned(
            round=0,
            trials=trials,
            from_checkpoint=s.start_checkpoint,
            from_sha256=None,
            start_step=0,
            rung_steps=steps,
            keep=keep,
            reason=f"{n} trials from scratch, successive halving over rungs of {list(steps)} steps "
            f"keeping {list(keep)}",
            evidence={"kind": "trials", "eta": ETA, "budget_steps": budget},
        )
        return [*out, plan]

    def plan_next_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        champion = state.tuning.champion
        budget = self.settings.budget_steps
        if champion is None or budget is None:
            return []
        remaining = budget - steps_spent(state)
        return self.plan_exploit(state, remaining, champion.hparams) if remaining > 0 else []
