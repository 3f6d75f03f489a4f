"""The ``pbt`` strategy: population-based training (Jaderberg et al. 2017) with truncation selection.

    PbtStrategy(settings).decide(state) -> [TrialProposed, RoundPlanned, SegmentScheduled, ...]

The tuner actor calls ``decide``; the round engine (``engine.RoundStrategy``) runs each
generation as a round of one rung and calls this module's hooks: ``plan_first_round``
(generation 0), ``plan_next_round`` (the next generation, or the champion alone) and
``decide_rung`` (the ranking, the promotion and the replacements).

A population of ``population`` members trains side by side, ``interval_steps`` at a
time; each interval is one round (a *generation*), and every member of a generation is
a trial of its own (its hyperparameters and its starting checkpoint,
``RoundPlanned.starts``), so the log says exactly what each member did when.

* **generation 0**: the starting hyperparameters and ``population - 1`` proposals of the
  configured sampler, all from scratch (or from ``resume_from_checkpoint``).
* **after each generation** the members are ranked (aligned first, then by the
  unweighted validation objective; ``objectives.score``). The best becomes the champion
  (``ChampionPromoted``, with the ranking as evidence). The worst ``quantile`` (and any
  member that failed) are replaced (``TrialPruned``): each copies the checkpoint of a
  member of the best ``quantile`` (*exploit*) and either multiplies or divides each searched
  value by ``perturb_factor`` or, with ``resample_probability``, takes the sampler's
  proposal (*explore*). Both go through the configured sampler: which way each value moves
  is asked of a study told every earlier perturbation's directions and its objective after
  its interval over its donor's, so the sampler learns which way pays. The others train on
  from their own checkpoints unchanged.
* **the end of the budget**: when a whole generation no longer fits, the champion alone
  trains the rest (an exploit round, as in ``forks``). Every member's steps count.

The random choices (which donor, perturb or resample) come from a generator seeded by the
run's seed and the generation number, the sampler's from the run's seed and the trial number:
a restarted tuner makes the same ones from the same log.
Values a guard rail moved (``state.tuning.adjustments``) are not perturbed.

Imports the standard library, ``protocol``, ``state`` and the tuner package's ``engine``,
``objectives`` and ``space`` only: never another strategy module.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

from ...protocol import Message
from ...protocol import messages as m
from ...protocol import metrics as mx
from ...state.model import Round, Segment, Trial, TunerState
from ...state.queries import steps_spent
from .engine import (
    INCUMBENT,
    RoundStrategy,
    candidates_table,
    describe_changes,
    finished_segments,
    is_eligible,
    propose_trial,
)
from .objectives import Requirement, Score, race_requirement, score
from .space import Param, Result, SearchSpace, ask, rebuild_study

CONTINUE, PERTURB, RESAMPLE = "pbt-continue", "pbt-perturb", "pbt-resample"
DIRECTIONS = ("down", "up")


class PbtStrategy(RoundStrategy):
    name = "pbt"

    # --- generation 0 ---------------------------------------------------------------------

    def plan_first_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        s, p = self.settings, self.settings.pbt
        hp = {**{n: announced[n]["default"] for n in self.space.names}, **s.base_hparams}
        size = p.population if self.space.params else 1
        budget = s.budget_steps
        steps = p.interval_steps if budget is None else max(1, min(p.interval_steps, budget // size))
        out: list[Message] = [
            propose_trial(0, hp, INCUMBENT, "member 0: the starting hyperparameters", {"member": 0, "generation": 0})
        ]
        if size > 1:
            study = rebuild_study(self.space, s.sampler, s.seed, s.n_startup_trials, [])
            for i in range(1, size):
                params, inputs = ask(study, self.space)
                out.append(
                    propose_trial(
                        i,
                        {**hp, **params},
                        s.sampler,
                        f"member {i}: sampled by {inputs['sampler']}: " + describe_changes(params, {}),
                        {"member": i, "generation": 0, "inputs": inputs, "outputs": params},
                    )
                )
        trials = tuple(t.trial_id for t in out if isinstance(t, m.TrialProposed))
        plan = m.RoundPlanned(
            round=0,
            trials=trials,
            from_checkpoint=s.start_checkpoint,
            from_sha256=None,
            start_step=0,
            rung_steps=(steps,),
            keep=(1,),
            reason=f"PBT generation 0: {len(trials)} members train {steps} steps from the start",
            evidence={"kind": "pbt", "generation": 0, "population": len(trials), "budget_steps": s.budget_steps},
        )
        return [*out, plan]

    def _interval(self, state: TunerState, size: int) -> int:
        """Steps for the next generation of ``size`` members; 0 when a whole one no longer fits."""
        interval = self.settings.pbt.interval_steps
        budget = self.settings.budget_steps
        if budget is None:
            return interval
        remaining = budget - steps_spent(state)
        return interval if remaining >= size * interval else 0

    # --- the next generation --------------------------------------------------------------

    def plan_next_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        champion = state.tuning.champion
        assert champion is not None
        budget = self.settings.budget_steps
        remaining = None if budget is None else budget - steps_spent(state)
        if remaining is not None and remaining <= 0:
            return []  # the budget is spent: the stop controller ends the run
        prev = state.tuning.rounds[-1]
        steps = self._interval(state, len(prev.trials))
        if len(prev.trials) == 1 or steps == 0:  # no whole generation fits (or nothing to search): the champion
            return self.plan_exploit(
                state, self.settings.pbt.interval_steps if remaining is None else remaining, champion.hparams
            )
        return self._generation(state, prev, steps)

    def _generation(self, state: TunerState, prev: Round, steps: int) -> list[Message]:
        s, p = self.settings, self.settings.pbt
        n = len(state.tuning.rounds)
        members = [state.tuning.trials[t] for t in prev.trials]
        ranked, results = self._ranking(state, members)
        cut = max(1, math.floor(len(members) * p.quantile))
        top = ranked[:cut]
        replaced = {t.trial_id for t in ranked[len(ranked) - cut :]} | {
            t.trial_id for t in members if t.trial_id not in results
        }  # the worst quantile, and every member that failed
        proposals = sum(1 for t in state.tuning.trials.values() if t.sampler not in (INCUMBENT, CONTINUE))
        rng = random.Random(f"{s.seed}:pbt:{n}")
        number = len(state.tuning.trials)
        out: list[Message] = []
        starts: dict[str, str] = {}
        for slot, t in enumerate(members):
            tid = f"t{number + slot}"
            if t.trial_id in replaced and proposals < s.n_trials:
                donor = rng.choice(top)
                hp, sampler, why, evidence = self._explore_from(state, donor, rng, number + slot)
                proposals += 1
                own = results.get(t.trial_id)
                lost = f"{own.objective:.4f}" if own else "failed"
                reason = (
                    f"member {slot}: {t.trial_id} ({lost}) replaced by a copy of {donor.trial_id} "
                    f"({results[donor.trial_id].objective:.4f}); " + why
                )
                evidence = {"member": slot, "generation": n, "parent": donor.trial_id, **evidence}
                origin = finished_segments(state, donor.trial_id)[-1].segment_id
            else:
                source = t if t.trial_id in results else top[0]  # failed, with no proposals left: copy the best
                hp, sampler = source.effective_hparams(), CONTINUE  # with its own guard corrections
                reason = f"member {slot}: {source.trial_id} trains on with its hyperparameters"
                evidence = {"member": slot, "generation": n, "parent": source.trial_id}
                origin = finished_segments(state, source.trial_id)[-1].segment_id
            out.append(propose_trial(number + slot, hp, sampler, reason, evidence))
            starts[tid] = origin
        champion = state.tuning.champion
        assert champion is not None
        copied = sum(1 for o in out if isinstance(o, m.TrialProposed) and o.sampler != CONTINUE)
        plan = m.RoundPlanned(
            round=n,
            trials=tuple(starts),
            from_checkpoint=champion.checkpoint,
            from_sha256=champion.checkpoint_sha256,
            start_step=champion.step,
            rung_steps=(steps,),
            keep=(1,),
            starts=starts,
            reason=f"PBT generation {n}: {len(starts)} members train {steps} steps; "
            f"{copied} of them copied a better member",
            evidence={
                "kind": "pbt",
                "generation": n,
                "population": len(starts),
                "ranking": [t.trial_id for t in ranked],
                "replaced": sorted(replaced),
                "steps_spent": steps_spent(state),
                "budget_steps": s.budget_steps,
            },
        )
        return [*out, plan]

    def _explore_from(
        self, state: TunerState, donor: Trial, rng: random.Random, number: int
    ) -> tuple[dict[str, Any], str, str, dict[str, Any]]:
        """The donor's hyperparameters perturbed (or resampled), with the reason and the evidence.
        The donor's guard corrections come along; values a guard moved are not perturbed."""
        s, p = self.settings, self.settings.pbt
        base = donor.effective_hparams()
        adjusted = set(state.tuning.adjustments) | set(donor.adjustments)
        params = [q for q in self.space.params if q.name not in adjusted]
        if rng.random() < p.resample_probability:
            study = rebuild_study(self.space, s.sampler, s.seed + number, s.n_startup_trials, self._pbt_results(state))
            proposal, inputs = ask(study, self.space)
            change = {k: v for k, v in proposal.items() if k not in adjusted}
            return (
                {**base, **change},
                RESAMPLE,
                f"resampled by {inputs['sampler']}: " + describe_changes(change, {}),
                {"inputs": inputs, "outputs": change},
            )
        # which way to move each value: asked of the sampler, told how earlier perturbations did
        space = SearchSpace(tuple(Param(q.name, "categorical", choices=DIRECTIONS) for q in params))
        told = self._perturb_results(state, {q.name for q in params})
        study = rebuild_study(space, s.sampler, s.seed + number, s.n_startup_trials, told)
        directions, inputs = ask(study, space) if params else ({}, {})
        change = {q.name: perturb(q, base.get(q.name), p.perturb_factor, directions[q.name] == "up") for q in params}
        change = {k: v for k, v in change.items() if v is not None}
        return (
            {**base, **change},
            PERTURB,
            f"perturbed by x/÷ {p.perturb_factor:g} in the directions {inputs.get('sampler', '-')} chose from "
            f"{inputs.get('trials_seen', 0)} earlier perturbations: " + describe_changes(change, base),
            {"around": {k: base.get(k) for k in change}, "directions": directions, "inputs": inputs, "outputs": change},
        )

    def _perturb_results(self, state: TunerState, names: set[str]) -> list[Result]:
        """Every finished perturbation as the sampler sees it: the direction it moved each value and
        its objective after its interval over its donor's when it was copied (< 1: it improved)."""
        out = []
        for rnd in state.tuning.rounds:
            for tid in rnd.trials:
                t = state.tuning.trials[tid]
                origin = state.tuning.segments.get(rnd.starts.get(tid, ""))
                if t.sampler != PERTURB or origin is None:
                    continue
                directions = self._directions(state, t, origin)
                if directions is None or set(directions) != names:
                    continue
                done = finished_segments(state, tid)
                before = score(origin.metrics).objective
                value = score(done[0].metrics).objective / before if done and before > 0 else None
                out.append(Result(number=t.number, params=directions, value=value))
        return out

    def _pbt_results(self, state: TunerState) -> list[Result]:
        """Every member's objective relative to its generation's best (1: the best), for the sampler."""
        out = []
        for rnd in state.tuning.rounds:
            if rnd.winner is None or len(rnd.trials) < 2:
                continue
            members = [state.tuning.trials[t] for t in rnd.trials]
            _, results = self._ranking(state, members)
            best = min((r.objective for r in results.values() if math.isfinite(r.objective)), default=None)
            for t in members:
                r = results.get(t.trial_id)
                value = r.objective / best if r is not None and best and math.isfinite(r.objective) else None
                out.append(Result(number=t.number, params=t.hparams, value=value))
        return out

    def _directions(self, state: TunerState, t: Trial, origin: Segment) -> dict[str, str] | None:
        """Which way a perturbation moved each searched value from its donor's (a value clipped at a
        bound moved towards it); None when that cannot be told (a categorical, an unknown donor)."""
        donor = state.tuning.trials.get(origin.trial_id or "")
        if donor is None:
            return None
        before = donor.effective_hparams()
        out = {}
        for q in self.space.params:
            a, b = t.hparams.get(q.name), before.get(q.name)
            if q.name not in t.hparams or q.name not in before:
                continue
            if q.type == "categorical":  # as positions among the choices
                if a not in q.choices or b not in q.choices:
                    return None
                a, b = q.choices.index(a), q.choices.index(b)
                out[q.name] = "up" if a > b or (a == b == len(q.choices) - 1) else "down"
                continue
            if not isinstance(a, int | float) or not isinstance(b, int | float):
                return None
            if a != b:
                out[q.name] = "up" if a > b else "down"
            elif q.high is not None and a >= q.high:
                out[q.name] = "up"
            elif q.low is not None and a <= q.low:
                out[q.name] = "down"
        return out

    def _ranking(self, state: TunerState, members: list[Trial]) -> tuple[list[Trial], dict[str, Score]]:
        """The members that finished, best first (aligned before unaligned), and their scores."""
        results = {t.trial_id: score(f[0].metrics) for t in members if (f := finished_segments(state, t.trial_id))}
        if not results:
            return [], results
        required = self._required(results)
        ranked = sorted(
            (t for t in members if t.trial_id in results),
            key=lambda t: (not is_eligible(results[t.trial_id], required), results[t.trial_id].objective, t.number),
        )
        return ranked, results

    def _required(self, results: Mapping[str, Score]) -> Requirement:
        f = self.settings.forks
        return race_requirement(results.values(), f.min_diagonality, f.min_gate_stop_rate)

    # --- deciding a generation --------------------------------------------------------------

    def decide_rung(self, state: TunerState, rnd: Round, rung: int, alive: list[Trial]) -> list[Message]:
        ranked, results = self._ranking(state, alive)
        required = self._required(results)
        best = ranked[0]
        seg = finished_segments(state, best.trial_id)[0]
        r = results[best.trial_id]
        champion = state.tuning.champion
        kept = champion is not None and dict(best.hparams) == dict(champion.hparams)
        table = candidates_table(ranked, results, required)
        evidence: dict[str, Any] = {
            "round": rnd.round,
            "generation": rnd.round,
            "candidates": table,
            **required.evidence(),
            mx.DIAGONALITY: r.diagonality,
        }
        out: list[Message] = []
        cut = max(1, math.floor(len(rnd.trials) * self.settings.pbt.quantile)) if len(rnd.trials) > 1 else 0
        for t in ranked[len(ranked) - cut :] if cut and len(ranked) > cut else ():
            out.append(
                m.TrialPruned(
                    trial_id=t.trial_id,
                    step=finished_segments(state, t.trial_id)[0].end_step or 0,
                    value=results[t.trial_id].objective / r.objective if r.objective > 0 else None,
                    reason=f"{t.trial_id} in the worst {self.settings.pbt.quantile:.0%} of generation "
                    f"{rnd.round} ({results[t.trial_id].objective:.4f}): replaced next",
                    evidence=evidence,
                )
            )
        previous = champion.objective if champion else None
        why = (
            f"generation {rnd.round}: {best.trial_id} is the best of {len(ranked)} members, objective "
            f"{r.objective:.4f}" + (f" (champion was {previous:.4f})" if previous is not None else "")
        )
        out.append(
            m.ChampionPromoted(
                segment_id=seg.segment_id,
                trial_id=best.trial_id,
                checkpoint=seg.checkpoint or "",
                checkpoint_sha256=seg.checkpoint_sha256 or "",
                objective=r.objective,
                previous_objective=previous,
                step=seg.end_step or 0,
                hparams=dict(seg.hparams),
                kept=kept,
                reason=why,
                evidence=evidence,
            )
        )
        return out


def perturb(param: Param, value: Any, factor: float, up: bool) -> Any:
    """``value`` times (``up``) or divided by ``factor`` (a neighbouring choice for a categorical), within range."""
    if param.type == "categorical":
        choices = list(param.choices)
        if value not in choices:
            return choices[-1] if up else choices[0]
        i = choices.index(value) + (1 if up else -1)
        return choices[min(max(i, 0), len(choices) - 1)]
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    new = value * factor if up else value / factor
    if param.type == "int" and round(new) == value:
        new = value + (1 if up else -1) * (param.step or 1)
    return param.clip(new)
