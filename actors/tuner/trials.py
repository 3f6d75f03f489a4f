"""The ``trials`` strategy: classic Optuna trials from scratch, raced by Hyperband.

    TrialsStrategy(settings).decide(state) -> [TrialProposed, RoundPlanned, SegmentScheduled, ...]

The tuner actor calls ``decide``; the round engine (``engine.RoundStrategy``) calls this
module's hooks, ``plan_first_round`` and ``plan_next_round``, and decides every rung itself
(no incumbent: the best ranked wins).

Hyperband (Li et al., 2018) with ``ETA`` = 3: ``SEARCH_SHARE`` of the step budget goes to
brackets of trials trained from the model's initial weights, each bracket a round and a
successive-halving race; the first bracket starts many trials on short rungs, each later one
fewer trials on longer rungs, and every bracket's survivor has trained the same ``R`` steps, so
the bracket winners compare. ``brackets`` chooses how many (at most ``MAX_BRACKETS``) and how
long the shortest rung is (at least ``MIN_RUNG_STEPS``) for the budget and ``n_trials``; the
brackets and their rungs are on record in each ``RoundPlanned``.

Ask and tell: a bracket's trials are asked of the configured sampler only when the bracket
starts, from a study told every earlier trial: completed at ``R`` steps with its objective,
or pruned at the steps it reached with its last objective (model-based samplers rank pruned
trials by how far they got). So TPE, CMA-ES and GP see results from the second bracket on.
Bracket 0's first trial is the starting hyperparameters.

After the brackets, the best bracket winner (aligned first, then by the objective at ``R``)
trains on alone from its checkpoint for the rest of the budget: the run's answer. It is the
from-scratch baseline for ``forks``: every candidate pays for its own start.

Imports the standard library, ``protocol``, ``state`` and the tuner package's ``engine``,
``objectives`` and ``space`` only: never another strategy module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...protocol import Message
from ...protocol import messages as m
from ...state.model import Round, TunerState
from ...state.queries import steps_spent
from .engine import RoundStrategy, describe_changes, finished_segments, is_eligible, propose_trial
from .objectives import race_requirement, score
from .space import Result, ask, rebuild_study

ETA = 3
MAX_BRACKETS = 3
MIN_RUNG_STEPS = 10  # a rung shorter than this ranks start-up noise (DESIGN.md section 5)
SEARCH_SHARE = 0.5  # of the step budget for the brackets; the best winner trains the rest
START, BEST = "start", "best-bracket"


@dataclass(frozen=True, slots=True)
class Bracket:
    trials: int
    rung_steps: tuple[int, ...]  # each rung's own steps (a survivor trains their sum: R)
    keep: tuple[int, ...]

    @property
    def steps(self) -> int:
        alive = (self.trials, *self.keep[:-1])
        return sum(a * s for a, s in zip(alive, self.rung_steps, strict=True))


def bracket(s: int, s_max: int, unit: int) -> Bracket:
    """Hyperband's bracket ``s`` of ``0..s_max``: ``ceil((s_max + 1) / (s + 1)) * ETA**s`` trials whose
    survivors reach ``unit * ETA**(s_max - s + i)`` steps at rung ``i``, keeping a third each time."""
    n = math.ceil((s_max + 1) / (s + 1)) * ETA**s
    totals = [unit * ETA ** (s_max - s + i) for i in range(s + 1)]
    rung_steps = tuple(b - a for a, b in zip([0, *totals[:-1]], totals, strict=True))
    keep, alive = [], n
    for _ in range(s):
        alive = max(1, alive // ETA)
        keep.append(alive)
    keep.append(1)
    return Bracket(n, rung_steps, tuple(keep))


def brackets(budget: int, n_trials: int) -> list[Bracket]:
    """The most brackets (and trials) whose shortest rung is at least ``MIN_RUNG_STEPS`` (or, on a
    budget too small for that, one step) within ``SEARCH_SHARE`` of ``budget`` and ``n_trials``."""
    search = max(1, int(budget * SEARCH_SHARE))
    for floor in (MIN_RUNG_STEPS, 1):
        for s_max in range(MAX_BRACKETS - 1, -1, -1):
            unit_cost = sum(bracket(s, s_max, 1).steps for s in range(s_max + 1))
            unit = search // unit_cost
            plan = [bracket(s, s_max, unit) for s in range(s_max, -1, -1)]
            if unit >= floor and sum(b.trials for b in plan) <= max(n_trials, 1):
                return plan
    return [Bracket(1, (search,), (1,))]


class TrialsStrategy(RoundStrategy):
    name = "trials"

    def _plan(self) -> list[Bracket]:
        s = self.settings
        n = s.n_trials if self.space.params else 1
        return brackets(s.budget_steps or 600, n)

    def plan_first_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        return self._bracket(state, announced, 0)

    def plan_next_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        champion = state.tuning.champion
        budget = self.settings.budget_steps
        if champion is None:
            return []
        plan, done = self._plan(), len(state.tuning.rounds)
        if done < len(plan):
            return self._bracket(state, announced, done)
        remaining = None if budget is None else budget - steps_spent(state)
        if remaining is not None and remaining <= 0:
            return []
        steps = remaining if remaining is not None else self.settings.forks.exploit_steps
        if done > len(plan):  # the best winner is training on already
            return self.plan_exploit(state, steps, champion.hparams)
        return self._train_best(state, steps)

    # --- a bracket ----------------------------------------------------------------------------

    def _bracket(self, state: TunerState, announced: Mapping[str, Any], index: int) -> list[Message]:
        s = self.settings
        plan = self._plan()
        b = plan[index]
        hp = {**{p: announced[p]["default"] for p in self.space.names}, **s.base_hparams}
        number = len(state.tuning.trials)
        out: list[Message] = []
        if index == 0:
            out.append(propose_trial(number, hp, START, "the starting hyperparameters", {"bracket": 0}))
        if len(out) < b.trials:
            told = self._results(state)
            study = rebuild_study(self.space, s.sampler, s.seed + index, s.n_startup_trials, told)
            while len(out) < b.trials:
                params, inputs = ask(study, self.space)
                out.append(
                    propose_trial(
                        number + len(out),
                        {**hp, **params},
                        s.sampler,
                        f"bracket {index}: sampled by {inputs['sampler']} from {inputs['trials_seen']} "
                        f"completed and {inputs['pruned_seen']} pruned trials: " + describe_changes(params, {}),
                        {"bracket": index, "inputs": inputs, "outputs": params},
                    )
                )
        trials = tuple(t.trial_id for t in out if isinstance(t, m.TrialProposed))
        total = sum(b.rung_steps)
        rounds = [{"trials": x.trials, "rung_steps": list(x.rung_steps), "keep": list(x.keep)} for x in plan]
        round_plan = m.RoundPlanned(
            round=len(state.tuning.rounds),
            trials=trials,
            from_checkpoint=s.start_checkpoint,
            from_sha256=None,
            start_step=0,
            rung_steps=b.rung_steps,
            keep=b.keep,
            reason=f"Hyperband bracket {index + 1} of {len(plan)}: {len(trials)} trials from scratch, rungs of "
            f"{list(b.rung_steps)} steps keeping {list(b.keep)} (survivors reach {total} steps)",
            evidence={
                "kind": "trials",
                "eta": ETA,
                "bracket": index,
                "brackets": rounds,
                "search_share": SEARCH_SHARE,
                "budget_steps": s.budget_steps,
            },
        )
        return [*out, round_plan]

    def _results(self, state: TunerState) -> list[Result]:
        """Every earlier trial as the study sees it: completed (it survived its bracket) with its
        objective, or pruned at the steps it reached with its last objective; failed: no value."""
        out = []
        for rnd in state.tuning.rounds:
            for tid in rnd.trials:
                t = state.tuning.trials[tid]
                done = finished_segments(state, tid)
                if not done:
                    out.append(Result(number=t.number, params=t.hparams, value=None))
                    continue
                value = score(done[-1].metrics).objective
                reached = sum(rnd.rung_steps[: len(done)])
                survived = rnd.winner == tid
                out.append(Result(t.number, t.hparams, value, pruned_at=None if survived else reached))
        return out

    # --- after the brackets --------------------------------------------------------------------

    def _train_best(self, state: TunerState, steps: int) -> list[Message]:
        """The best bracket winner (at the same ``R`` steps from scratch) trains on alone."""
        winners = [(rnd, state.tuning.trials[rnd.winner]) for rnd in state.tuning.rounds if rnd.winner]
        scores = {t.trial_id: score(finished_segments(state, t.trial_id)[-1].metrics) for _, t in winners}
        f = self.settings.forks
        required = race_requirement(scores.values(), f.min_diagonality, f.min_gate_stop_rate)
        ranked = sorted(
            winners,
            key=lambda w: (not is_eligible(scores[w[1].trial_id], required), scores[w[1].trial_id].objective),
        )
        rnd, best = ranked[0]
        champion = state.tuning.champion
        assert champion is not None
        if champion.trial_id == best.trial_id:
            return self.plan_exploit(state, steps, champion.hparams)
        return self._from_winner(state, rnd, best.trial_id, steps, scores, champion.objective)

    def _from_winner(
        self, state: TunerState, rnd: Round, trial_id: str, steps: int, scores: Mapping[str, Any], latest: float
    ) -> list[Message]:
        seg = finished_segments(state, trial_id)[-1]
        won = state.tuning.trials[trial_id]
        trial = propose_trial(
            len(state.tuning.trials),
            won.effective_hparams(),
            BEST,
            f"the best bracket winner, {trial_id} of bracket {rnd.round + 1} ({scores[trial_id].objective:.4f} "
            f"against the last bracket's {latest:.4f}), trains on from its checkpoint",
            {"winners": {k: v.objective for k, v in scores.items()}},
        )
        plan = m.RoundPlanned(
            round=len(state.tuning.rounds),
            trials=(trial.trial_id,),
            from_checkpoint=seg.checkpoint,
            from_sha256=seg.checkpoint_sha256,
            start_step=seg.end_step or 0,
            rung_steps=(steps,),
            keep=(1,),
            reason=f"the best of {len(scores)} bracket winners trains {steps} steps on its lineage",
            evidence={"kind": "exploit", "steps_spent": steps_spent(state), "budget_steps": self.settings.budget_steps},
        )
        return [trial, plan]
