"""The ``forks`` strategy (the default): rounds of candidates forked from the champion's checkpoint.

    ForksStrategy(settings).decide(state) -> [TrialProposed, RoundPlanned, SegmentScheduled, ...]

The tuner actor calls ``decide``; the round engine (``engine.RoundStrategy``) runs the rounds
and calls this module's hooks: ``plan_first_round`` (the warm-up), ``plan_next_round`` (explore
or exploit) and ``choose_winner`` (the margin and tie rules below).

A run is a sequence of rounds (``RoundPlanned``), each a race of trials from one
checkpoint over rungs of steps (successive halving); the last rung keeps one winner,
whose checkpoint becomes the champion's (``ChampionPromoted``; ``kept=True`` when the
champion's own hyperparameters won). Three kinds of round:

* **warm-up** (round 0): the starting hyperparameters from scratch (or from
  ``resume_from_checkpoint``) for ``warmup_steps``: nothing is decided in the first
  steps, where every curve is start-up noise.
* **explore**: the incumbent (the champion's hyperparameters) and candidates, each
  ``probe_steps`` from the champion. The first round is wide
  (``first_round_candidates``), its fixed candidates those ``first_round`` names, in order:
  ``ladder`` (the log-scale values, the learning rate, x ``ladder_factor``), ``ladder-all``
  (the same, and every other searched value one step towards its low end: less
  regularisation, which a fixed budget rewarded at every learning rate on every task of the
  benchmark suite's selection splits), ``wide`` (x ``wide_factor``), then sampler proposals.
  The default is ``ladder-all`` and ``wide``: with ``ladder`` as well, its 30-step probe won
  on the suite's ``demo`` and lost the long run (docs/BENCHMARKS.md).
  Later rounds are small (``candidates``): the cool-down candidate (/ ``ladder_factor``)
  once ``cooldown_at`` of the budget is spent, then sampler proposals. Losers' steps
  are the price of tuning, so explore mostly early (DESIGN.md section 5).

The sampler (``search_algorithm``) proposes *changes* to the incumbent (``space.relative_space``)
and learns from every earlier challenger, the fixed ones included: its change to its round's
incumbent and its first-rung objective over the incumbent's. Objectives measured at other steps
from other champions are not comparable; these ratios are. ``seed`` seeds it.
* **exploit**: the champion alone for ``exploit_steps``; the steps stay on the lineage.

Why a winner wins: candidates are compared on the unweighted validation objective
(``objectives.score``), never on the training loss with its tunable weights. A
challenger must beat the incumbent by ``margin`` (relative; gaps under the seed noise
are ties, and ties keep the champion), and its attention must be diagonal: at least
``min_diagonality``, or, while the champion itself is not aligned yet, no worse than
the champion's minus 0.1. Every prune and promotion records the numbers compared.

Failures (re-runs after a rollback, pruning, a fatal stop) are handled by the engine alike
for every strategy (``engine.py``).

Imports the standard library, ``protocol``, ``state`` and the tuner package's ``engine``,
``objectives`` and ``space`` only: never another strategy module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ...protocol import Message
from ...protocol import messages as m
from ...state.model import Trial, TunerState
from ...state.queries import champion_curve, phase_of, steps_spent
from .engine import INCUMBENT, RoundStrategy, describe_changes, finished_segments, is_eligible, propose_trial
from .objectives import Requirement, Score, score
from .space import Result, apply_change, ask, change_between, rebuild_study, relative_space

LADDER, STEP, WIDE, COOLDOWN = "ladder", "ladder-all", "wide", "cool-down"


class ForksStrategy(RoundStrategy):
    name = "forks"

    # --- planning rounds ------------------------------------------------------------------

    def plan_first_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        hp = {**{n: announced[n]["default"] for n in self.space.names}, **self.settings.base_hparams}
        trial = propose_trial(0, hp, INCUMBENT, "the starting hyperparameters (config and trainer defaults)", {})
        steps = self._fit(self.settings.forks.warmup_steps, state)
        start = self.settings.start_checkpoint
        plan = m.RoundPlanned(
            round=0,
            trials=(trial.trial_id,),
            from_checkpoint=start,
            from_sha256=None,
            start_step=0,
            rung_steps=(steps,),
            keep=(1,),
            reason=f"warm-up: {steps} steps with the starting hyperparameters before any decision",
            evidence={"kind": "warmup", "budget_steps": self.settings.budget_steps},
        )
        return [trial, plan]

    def _fit(self, steps: int, state: TunerState) -> int:
        budget = self.settings.budget_steps
        return steps if budget is None else max(1, min(steps, budget - steps_spent(state)))

    def plan_next_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        """Explore once wide after the warm-up, exploit up to the cool-down point, race a cool-down, exploit the rest.

        Without a step budget there is no cool-down point: explore and exploit rounds alternate,
        and lower learning rates may win once the champion's gains are small (fine-tuning).
        """
        f = self.settings.forks
        champion = state.tuning.champion
        assert champion is not None  # a decided round always promoted or kept one
        budget = self.settings.budget_steps
        spent = steps_spent(state)
        if budget is not None and spent >= budget:
            return []  # the budget is spent: the stop controller ends the run
        explored = [r for r in state.tuning.rounds if len(r.trials) > 1]
        k = f.first_round_candidates if not explored else f.candidates
        challengers = sum(1 for t in state.tuning.trials.values() if t.sampler != INCUMBENT)
        may = k > 1 and bool(self.space.params) and len(state.tuning.rounds[-1].trials) == 1
        may = may and challengers + k - 1 <= self.settings.n_trials
        if budget is None:
            return (
                self._explore(state, k, champion.hparams, announced)
                if may
                else self.plan_exploit(state, f.exploit_steps, champion.hparams)
            )
        remaining = budget - spent
        cool_point = f.cooldown_at * budget
        cooling = self._cooling(state)
        if (
            may
            and (not explored or cooling)
            and remaining >= k * f.probe_steps + (f.probe_steps if cooling else f.exploit_steps)
        ):
            return self._explore(state, k, champion.hparams, announced)
        steps = f.exploit_steps
        if not cooling:
            steps = min(steps, max(f.probe_steps, math.ceil(cool_point - spent)))  # end on the cool-down point
        if remaining - steps < f.candidates * f.probe_steps + f.probe_steps:
            steps = remaining  # no round would fit after this one: the lineage takes the rest
        return self.plan_exploit(state, min(steps, remaining), champion.hparams)

    def _explore(self, state: TunerState, k: int, hp: Mapping[str, Any], announced: Mapping[str, Any]) -> list[Message]:
        f, s = self.settings.forks, self.settings
        champion = state.tuning.champion
        assert champion is not None
        number = len(state.tuning.trials)
        first = not any(len(r.trials) > 1 for r in state.tuning.rounds)
        adjusted = set(state.tuning.adjustments)
        logs = [p for p in self.space.params if p.type == "loguniform" and p.name not in adjusted]
        current = {p.name: hp.get(p.name, announced[p.name]["default"]) for p in self.space.params}
        # (hparams, sampler, reason, evidence) of each candidate, the incumbent first
        cands: list[tuple[dict[str, Any], str, str, dict[str, Any]]] = [
            (dict(hp), INCUMBENT, "the incumbent: the champion's hyperparameters", {})
        ]
        if self._cooling(state) and logs:
            cool = {p.name: p.clip(current[p.name] / f.ladder_factor) for p in logs}
            cands.append(
                (
                    {**hp, **cool},
                    COOLDOWN,
                    f"cool-down: log-scale values / {f.ladder_factor:g}: " + describe_changes(cool, {}),
                    {"around": {n: current[n] for n in cool}, "outputs": cool},
                )
            )
        if first:
            ups = {
                name: {p.name: p.clip(current[p.name] * factor) for p in logs}
                for factor, name in ((f.ladder_factor, LADDER), (f.wide_factor, WIDE))
            }
            others = [p for p in self.space.params if p.type != "loguniform" and p.name not in adjusted]
            down = {p.name: p.step_down(current[p.name], f.ladder_factor) for p in others}
            down = {n: v for n, v in down.items() if v != current[n]}
            fixed: dict[str, tuple[dict[str, Any], str, str, dict[str, Any]]] = {}
            if ups[LADDER]:
                fixed[LADDER] = (
                    {**hp, **ups[LADDER]},
                    LADDER,
                    f"{LADDER}: log-scale values x {f.ladder_factor:g}: " + describe_changes(ups[LADDER], {}),
                    {"around": {n: current[n] for n in ups[LADDER]}, "outputs": ups[LADDER]},
                )
            if down:
                both = {**ups[LADDER], **down}
                fixed[STEP] = (
                    {**hp, **both},
                    STEP,
                    f"{STEP}: log-scale values x {f.ladder_factor:g}, the others "
                    f"a step towards their low end: " + describe_changes(both, {}),
                    {"around": {n: current[n] for n in both}, "outputs": both},
                )
            if ups[WIDE]:
                fixed[WIDE] = (
                    {**hp, **ups[WIDE]},
                    WIDE,
                    f"{WIDE}: log-scale values x {f.wide_factor:g}: " + describe_changes(ups[WIDE], {}),
                    {"around": {n: current[n] for n in ups[WIDE]}, "outputs": ups[WIDE]},
                )
            if STEP not in fixed and LADDER in fixed and LADDER not in f.first_round:
                fixed[STEP] = fixed[LADDER]  # nothing else to step down: ladder-all is the ladder itself
            cands += [fixed[name] for name in f.first_round if name in fixed]  # forks.first_round's order
        cands = cands[:k]
        if len(cands) < k:
            cands += self._sampled(state, k - len(cands), hp, current, adjusted)
        out: list[Message] = [propose_trial(number + i, c[0], c[1], c[2], c[3]) for i, c in enumerate(cands)]
        trials = tuple(t.trial_id for t in out if isinstance(t, m.TrialProposed))
        plan = m.RoundPlanned(
            round=len(state.tuning.rounds),
            trials=trials,
            from_checkpoint=champion.checkpoint,
            from_sha256=champion.checkpoint_sha256,
            start_step=champion.step,
            rung_steps=(f.probe_steps,),
            keep=(1,),
            reason=f"explore: {len(trials)} candidates race {f.probe_steps} steps from the champion",
            evidence={
                "kind": "explore",
                "steps_spent": steps_spent(state),
                "budget_steps": s.budget_steps,
                "margin": f.margin,
                "cooling": self._cooling(state),
            },
        )
        return [*out, plan]

    def _cooling(self, state: TunerState) -> bool:
        """Past ``cooldown_at`` of the budget (without one: in fine-tuning): a lower learning rate may win now."""
        budget = self.settings.budget_steps
        if budget is None:
            return phase_of(champion_curve(state)[1:]) == "fine_tuning"
        return steps_spent(state) >= self.settings.forks.cooldown_at * budget

    def _sampled(
        self, state: TunerState, n: int, hp: Mapping[str, Any], current: Mapping[str, Any], adjusted: set[str]
    ) -> list[tuple[dict[str, Any], str, str, dict[str, Any]]]:
        """``n`` candidates from the configured sampler. Its study is over *changes* to the incumbent
        (``space.relative_space``), told every earlier challenger's change and the ratio of its
        first-rung objective to its round's incumbent's, so it learns from every round, the first
        round's fixed candidates included. ``grid`` walks the absolute grid instead (a grid of
        changes would be a grid around a moving point)."""
        s, f = self.settings, self.settings.forks
        number = len(state.tuning.trials)
        relative = s.sampler != "grid"
        space = relative_space(self.space, f.wide_factor) if relative else self.space
        study = rebuild_study(space, s.sampler, s.seed + number, s.n_startup_trials, self._results(state, relative))
        out = []
        for _ in range(n):
            proposal, inputs = ask(study, space)
            params = apply_change(self.space, proposal, current) if relative else proposal
            params = {k: v for k, v in params.items() if k not in adjusted}
            what = "a change to the incumbent" if relative else "a grid point"
            out.append(
                (
                    {**hp, **params},
                    s.sampler,
                    f"sampled by {inputs['sampler']} ({what}, from {inputs['trials_seen']} evaluated "
                    "challengers): " + describe_changes(params, current),
                    {"inputs": inputs, "proposal": proposal, "relative": relative, "outputs": params},
                )
            )
        return out

    def _results(self, state: TunerState, relative: bool = True) -> list[Result]:
        """Every explored challenger as the study sees it: its change to its round's incumbent
        (``relative``; otherwise its hyperparameters) and its first-rung objective over the
        incumbent's (< 1: better; None when it failed)."""
        factor = self.settings.forks.wide_factor
        results = []
        for rnd in state.tuning.rounds:
            if len(rnd.trials) < 2 or rnd.winner is None:
                continue
            trials = [state.tuning.trials[t] for t in rnd.trials]
            firsts = {t.trial_id: finished_segments(state, t.trial_id) for t in trials}
            inc = next((t for t in trials if t.sampler == INCUMBENT), None)
            if inc is None:
                continue
            inc_score = score(firsts[inc.trial_id][0].metrics) if firsts[inc.trial_id] else None
            for t in trials:
                if t is inc:
                    continue
                first = firsts[t.trial_id]
                value = None
                if first and inc_score is not None and inc_score.objective > 0:
                    value = score(first[0].metrics).objective / inc_score.objective
                params = change_between(self.space, t.hparams, inc.hparams, factor) if relative else t.hparams
                results.append(Result(number=t.number, params=params, value=value))
        return results

    # --- deciding the last rung -------------------------------------------------------------

    def choose_winner(
        self,
        state: TunerState,
        ranked: list[Trial],
        results: Mapping[str, Score],
        inc: Trial | None,
        required: Requirement,
    ) -> tuple[Trial, dict[str, Any]]:
        """The round's winner and why: a challenger must beat the incumbent by ``margin``; among
        challengers within ``tie_margin`` of the best, the smallest learning-rate step wins (then
        the smallest change); before the cool-down share of the budget, no challenger with a
        lower learning rate wins."""
        f = self.settings.forks
        if inc is None:
            return ranked[0], {}
        i = results[inc.trial_id]
        cooling = self._cooling(state)
        lr = inc.hparams.get("learning_rate")
        deferred = [t.trial_id for t in ranked if t is not inc and not cooling and _lower(t.hparams, lr)]
        good = [
            t
            for t in ranked
            if t is not inc
            and t.trial_id not in deferred
            and is_eligible(results[t.trial_id], required)
            and results[t.trial_id].objective < i.objective * (1 - f.margin)
        ]
        notes: dict[str, Any] = {"deferred_lr_decreases": deferred} if deferred else {}
        if not good:
            return inc, notes
        best = min(results[t.trial_id].objective for t in good)
        ties = [t for t in good if results[t.trial_id].objective <= best * (1 + f.tie_margin)]
        winner = min(
            ties,
            key=lambda t: (
                self._distance(t.hparams, inc.hparams, log_only=True),
                self._distance(t.hparams, inc.hparams),
                t.number,
            ),
        )
        if len(ties) > 1:
            notes["ties"] = [t.trial_id for t in ties]
            notes["tie_rule"] = (
                f"within {f.tie_margin:.0%} of the best: the smallest step of the log-scale values "
                "(the learning rate) wins, then the smallest change"
            )
        return winner, notes

    def _distance(self, a: Mapping[str, Any], b: Mapping[str, Any], log_only: bool = False) -> float:
        """How far two candidates lie apart in the search space (log scale where the space is).

        ``log_only``: along the log-scale values alone (the learning rate): the tie rule's first
        key, because what short probes overrate is a larger rate (docs/BENCHMARKS.md)."""
        d = 0.0
        for p in self.space.params:
            x, y = a.get(p.name), b.get(p.name)
            if x == y or (log_only and p.type != "loguniform"):
                continue
            if p.type == "loguniform" and isinstance(x, int | float) and isinstance(y, int | float) and x > 0 < y:
                d += abs(math.log10(x / y))
            elif p.type in ("uniform", "int") and p.low is not None and p.high is not None:
                d += abs(float(x or 0) - float(y or 0)) / (p.high - p.low)
            else:
                d += 1.0
        return d


def _lower(hp: Mapping[str, Any], lr: Any) -> bool:
    new = hp.get("learning_rate")
    return isinstance(new, int | float) and isinstance(lr, int | float) and new < lr
