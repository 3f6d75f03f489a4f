"""The ``forks`` strategy (the default): rounds of candidates forked from the champion's checkpoint.

    ForksStrategy(settings).decide(state) -> [TrialProposed, RoundPlanned, SegmentScheduled, ...]

A run is a sequence of rounds (``RoundPlanned``), each a race of trials from one
checkpoint over rungs of steps (successive halving); the last rung keeps one winner,
whose checkpoint becomes the champion's (``ChampionPromoted``; ``kept=True`` when the
champion's own hyperparameters won). Three kinds of round:

* **warm-up** (round 0): the starting hyperparameters from scratch (or from
  ``resume_from_checkpoint``) for ``warmup_steps``: nothing is decided in the first
  steps, where every curve is start-up noise.
* **explore**: the incumbent (the champion's hyperparameters) and candidates, each
  ``probe_steps`` from the champion. The first round is wide
  (``first_round_candidates``): ``ladder`` (the log-scale values, the learning rate,
  x ``ladder_factor``), ``ladder-all`` (the same, and every other searched value one step
  towards its low end: less regularisation, which a fixed budget rewards on the demo,
  ``bench/hparam_screen.py``), ``wide`` (x ``wide_factor``), then Optuna proposals.
  Later rounds are small (``candidates``): the cool-down candidate (/ ``ladder_factor``)
  once ``cooldown_at`` of the budget is spent, Optuna proposals otherwise. Losers' steps
  are the price of tuning, so explore mostly early (DESIGN.md section 5).
* **exploit**: the champion alone for ``exploit_steps``; the steps stay on the lineage.

Why a winner wins: candidates are compared on the unweighted validation objective
(``objectives.score``), never on the training loss with its tunable weights. A
challenger must beat the incumbent by ``margin`` (relative; gaps under the seed noise
are ties, and ties keep the champion), and its attention must be diagonal: at least
``min_diagonality``, or, while the champion itself is not aligned yet, no worse than
the champion's minus 0.1. Every prune and promotion records the numbers compared.

Failures: a segment that failed with NaN or out-of-memory waits for the guard rails'
``RollbackPerformed`` and is re-run from its own starting checkpoint with the
hyperparameters the guard chose (at most ``MAX_RERUNS`` times, then the trial is
pruned); a lost or broken challenger is pruned; a lost or broken incumbent stops the
run (``StopDecided`` rule ``fatal_error``).

Imports the standard library, ``protocol``, ``state`` and the tuner package only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ...protocol import Message
from ...protocol import messages as m
from ...state.model import Round, Segment, Trial, TunerState
from ._base import Strategy, TuningSettings, announced_hparams, segments_of, steps_spent
from .objectives import Score, champion_curve, phase_of, score
from .space import Result, SearchSpace, ask, rebuild_study

MAX_RERUNS = 2  # rollbacks of one rung of one trial before the trial is given up
INCUMBENT = "incumbent"
LADDER, STEP, WIDE, COOLDOWN = "ladder", "ladder-all", "wide", "cool-down"


class ForksStrategy(Strategy):
    name = "forks"

    def __init__(self, settings: TuningSettings) -> None:
        super().__init__(settings)
        self.space = SearchSpace.from_config(settings.search_space)

    def decide(self, state: TunerState) -> Sequence[Message]:
        if state.control.phase != "running" or state.run is None:
            return []
        announced = announced_hparams(state)
        if announced is None:
            return []  # no worker has said what it can do yet
        rounds = state.tuning.rounds
        if not rounds:
            problems = self.space.check(announced)
            if problems:
                return [m.StopDecided(rule="fatal_error", reason="the search space does not fit the trainer: "
                                      + "; ".join(problems), evidence={"problems": problems})]  # fmt: skip
            return self._warmup(state, announced)
        if rounds[-1].winner is None:
            return self._advance(state, rounds[-1])
        return self._next_round(state, announced)

    # --- planning rounds ------------------------------------------------------------------

    def _warmup(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        hp = {**{n: announced[n]["default"] for n in self.space.names}, **self.settings.base_hparams}
        trial = _trial_proposed(0, hp, INCUMBENT, "the starting hyperparameters (config and trainer defaults)", {})
        steps = self._fit(self.settings.forks.warmup_steps, state)
        start = self.settings.start_checkpoint
        plan = m.RoundPlanned(round=0, trials=(trial.trial_id,), from_checkpoint=start, from_sha256=None,
                              start_step=0, rung_steps=(steps,), keep=(1,),
                              reason=f"warm-up: {steps} steps with the starting hyperparameters before any decision",
                              evidence={"kind": "warmup", "budget_steps": self.settings.budget_steps})  # fmt: skip
        return [trial, plan]

    def _fit(self, steps: int, state: TunerState) -> int:
        budget = self.settings.budget_steps
        return steps if budget is None else max(1, min(steps, budget - steps_spent(state)))

    def _next_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
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
            return self._explore(state, k, champion.hparams, announced) if may else self._exploit(
                state, f.exploit_steps, champion.hparams)  # fmt: skip
        remaining = budget - spent
        cool_point = f.cooldown_at * budget
        cooling = self._cooling(state)
        if may and (not explored or cooling) and remaining >= k * f.probe_steps + (f.probe_steps if cooling else
                                                                                f.exploit_steps):  # fmt: skip
            return self._explore(state, k, champion.hparams, announced)
        steps = f.exploit_steps
        if not cooling:
            steps = min(steps, max(f.probe_steps, math.ceil(cool_point - spent)))  # end on the cool-down point
        if remaining - steps < f.candidates * f.probe_steps + f.probe_steps:
            steps = remaining  # no round would fit after this one: the lineage takes the rest
        return self._exploit(state, min(steps, remaining), champion.hparams)

    def _exploit(self, state: TunerState, steps: int, hp: Mapping[str, Any]) -> list[Message]:
        number = len(state.tuning.trials)
        n = len(state.tuning.rounds)
        trial = _trial_proposed(number, hp, INCUMBENT, "the champion trains on with its hyperparameters", {})
        champion = state.tuning.champion
        assert champion is not None
        plan = m.RoundPlanned(round=n, trials=(trial.trial_id,), from_checkpoint=champion.checkpoint,
                              from_sha256=champion.checkpoint_sha256, start_step=champion.step, rung_steps=(steps,),
                              keep=(1,), reason=f"exploit: the champion trains {steps} steps on its lineage",
                              evidence={"kind": "exploit", "steps_spent": steps_spent(state),
                                        "budget_steps": self.settings.budget_steps})  # fmt: skip
        return [trial, plan]

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
            cands.append(({**hp, **cool}, COOLDOWN, f"cool-down: log-scale values / {f.ladder_factor:g}: "
                          + _changed(cool, {}),
                          {"around": {n: current[n] for n in cool}, "outputs": cool}))  # fmt: skip
        if first:
            ups = {name: {p.name: p.clip(current[p.name] * factor) for p in logs}
                   for factor, name in ((f.ladder_factor, LADDER), (f.wide_factor, WIDE))}  # fmt: skip
            others = [p for p in self.space.params if p.type != "loguniform" and p.name not in adjusted]
            down = {p.name: p.step_down(current[p.name], f.ladder_factor) for p in others}
            down = {n: v for n, v in down.items() if v != current[n]}
            if ups[LADDER]:
                cands.append(({**hp, **ups[LADDER]}, LADDER, f"{LADDER}: log-scale values x {f.ladder_factor:g}: "
                              + _changed(ups[LADDER], {}),
                              {"around": {n: current[n] for n in ups[LADDER]}, "outputs": ups[LADDER]}))  # fmt: skip
            if down:
                both = {**ups[LADDER], **down}
                cands.append(({**hp, **both}, STEP, f"{STEP}: log-scale values x {f.ladder_factor:g}, the others "
                              f"a step towards their low end: " + _changed(both, {}),
                              {"around": {n: current[n] for n in both}, "outputs": both}))  # fmt: skip
            if ups[WIDE]:
                cands.append(({**hp, **ups[WIDE]}, WIDE, f"{WIDE}: log-scale values x {f.wide_factor:g}: "
                              + _changed(ups[WIDE], {}),
                              {"around": {n: current[n] for n in ups[WIDE]}, "outputs": ups[WIDE]}))  # fmt: skip
        cands = cands[:k]
        if len(cands) < k:
            study = rebuild_study(self.space, s.sampler, s.seed + number, s.n_startup_trials, self._results(state))
            while len(cands) < k:
                params, inputs = ask(study, self.space)
                params = {n: v for n, v in params.items() if n not in adjusted}
                cands.append(({**hp, **params}, s.sampler, f"sampled by {inputs['sampler']} from "
                              f"{inputs['trials_seen']} evaluated trials: " + _changed(params, {}),
                              {"inputs": inputs, "outputs": params}))  # fmt: skip
        out: list[Message] = [_trial_proposed(number + i, c[0], c[1], c[2], c[3]) for i, c in enumerate(cands)]
        trials = tuple(t.trial_id for t in out if isinstance(t, m.TrialProposed))
        plan = m.RoundPlanned(round=len(state.tuning.rounds), trials=trials, from_checkpoint=champion.checkpoint,
                              from_sha256=champion.checkpoint_sha256, start_step=champion.step,
                              rung_steps=(f.probe_steps,), keep=(1,),
                              reason=f"explore: {len(trials)} candidates race {f.probe_steps} steps from the champion",
                              evidence={"kind": "explore", "steps_spent": steps_spent(state),
                                        "budget_steps": s.budget_steps, "margin": f.margin,
                                        "cooling": self._cooling(state)})  # fmt: skip
        return [*out, plan]

    def _cooling(self, state: TunerState) -> bool:
        """Past ``cooldown_at`` of the budget (without one: in fine-tuning): a lower learning rate may win now."""
        budget = self.settings.budget_steps
        if budget is None:
            return phase_of(champion_curve(state)[1:]) == "fine_tuning"
        return steps_spent(state) >= self.settings.forks.cooldown_at * budget

    def _results(self, state: TunerState) -> list[Result]:
        """Every explored trial's first-rung objective relative to its round's incumbent (< 1: better)."""
        results = []
        for rnd in state.tuning.rounds:
            if len(rnd.trials) < 2 or rnd.winner is None:
                continue
            trials = [state.tuning.trials[t] for t in rnd.trials]
            firsts = {t.trial_id: _finished(state, t.trial_id) for t in trials}
            inc = next((t for t in trials if t.sampler == INCUMBENT), None)
            inc_score = score(firsts[inc.trial_id][0].metrics) if inc and firsts[inc.trial_id] else None
            for t in trials:
                if t.sampler == INCUMBENT:
                    continue
                first = firsts[t.trial_id]
                value = None
                if first and inc_score is not None and inc_score.objective > 0:
                    value = score(first[0].metrics).objective / inc_score.objective
                results.append(Result(number=t.number, params=t.hparams, value=value))
        return results

    # --- running a round ---------------------------------------------------------------------

    def _advance(self, state: TunerState, rnd: Round) -> list[Message]:
        trials = [state.tuning.trials[t] for t in rnd.trials]
        alive = [t for t in trials if t.status != "pruned"]
        segs = {t.trial_id: segments_of(state, t.trial_id) for t in alive}
        if any(s.status in ("scheduled", "running") for ss in segs.values() for s in ss):
            return []  # a segment of this round is still on its way
        done = {t.trial_id: sum(1 for s in segs[t.trial_id] if s.status == "finished") for t in alive}
        if not alive:
            return [m.StopDecided(rule="fatal_error", reason=f"every trial of round {rnd.round} failed",
                                  evidence={"round": rnd.round, "trials": list(rnd.trials)})]  # fmt: skip
        low = min(done.values())
        if low > 0 and all(d == low for d in done.values()):
            rung = low - 1
            if len(alive) > rnd.keep[rung] or rung == len(rnd.rung_steps) - 1:
                return self._decide_rung(state, rnd, rung, alive)
            # the survivors of this rung go on to the next one
        out: list[Message] = []
        for t in alive:
            if done[t.trial_id] != low:
                continue
            last = segs[t.trial_id][-1] if segs[t.trial_id] else None
            if last is not None and last.status == "failed":
                out += self._after_failure(state, rnd, t, last, low, len(alive))
            else:
                out.append(self._schedule(state, rnd, t, low, segs[t.trial_id]))
        return out

    def _schedule(self, state: TunerState, rnd: Round, t: Trial, rung: int, segs: list[Segment],
                  rerun: Mapping[str, Any] | None = None, attempt: int = 0,
                  kind: str = "rb") -> m.SegmentScheduled:  # fmt: skip
        finished = [s for s in segs if s.status == "finished"]
        if finished:
            start, sha, step = finished[-1].checkpoint, finished[-1].checkpoint_sha256, finished[-1].end_step or 0
        elif t.trial_id in rnd.starts:  # a member of a PBT generation: its own starting point
            origin = state.tuning.segments[rnd.starts[t.trial_id]]
            start, sha, step = origin.checkpoint, origin.checkpoint_sha256, origin.end_step or 0
        else:
            start, sha, step = rnd.from_checkpoint, rnd.from_sha256, rnd.start_step
        hp = {**t.hparams, **state.tuning.adjustments, **(rerun or {})}
        sid = f"r{rnd.round}-{t.trial_id}-g{rung}" + (f"-{kind}{attempt}" if attempt else "")
        why = f"round {rnd.round}, rung {rung}: {t.trial_id} trains {rnd.rung_steps[rung]} steps from step {step}"
        if attempt:
            why += f" (re-run {attempt} after " + ("a rollback)" if kind == "rb" else "it was aborted)")
        return m.SegmentScheduled(segment_id=sid, trial_id=t.trial_id, from_checkpoint=start, from_sha256=sha,
                                  start_step=step, steps=rnd.rung_steps[rung], hparams=hp, reason=why,
                                  evidence={"round": rnd.round, "rung": rung, "sampler": t.sampler,
                                            "adjustments": dict(state.tuning.adjustments)})  # fmt: skip

    def _after_failure(self, state: TunerState, rnd: Round, t: Trial, last: Segment, rung: int,
                       n_alive: int) -> list[Message]:  # fmt: skip
        segs = segments_of(state, t.trial_id)
        failed_here = [s for s in segs if s.status == "failed" and s.scheduled_seq > _rung_start(segs, rung)]
        if last.failure in ("nan", "oom") and len([s for s in failed_here if s.failure != "aborted"]) <= MAX_RERUNS:
            if last.rollback is None:
                return []  # the guard rails decide how to roll back
            return [self._schedule(state, rnd, t, rung, segs, rerun=last.rollback, attempt=len(failed_here))]
        if last.failure == "aborted":  # stopped by an operator; the run was resumed: the same rung again
            return [self._schedule(state, rnd, t, rung, segs, attempt=len(failed_here), kind="re")]
        if t.sampler == INCUMBENT and n_alive == 1:
            return [m.StopDecided(rule="fatal_error", reason=f"segment {last.segment_id} of the champion's lineage "
                                  f"failed ({last.failure}: {last.failure_detail})",
                                  evidence={"segment_id": last.segment_id, "failure": last.failure,
                                            "failures": len(failed_here)})]  # fmt: skip
        return [m.TrialPruned(trial_id=t.trial_id, step=last.last_step or last.start_step, value=None,
                              reason=f"{t.trial_id} failed {len(failed_here)} time(s) ({last.failure}); given up",
                              evidence={"segment_id": last.segment_id, "failure": last.failure,
                                        "detail": (last.failure_detail or "")[:500]})]  # fmt: skip

    def _decide_rung(self, state: TunerState, rnd: Round, rung: int, alive: list[Trial]) -> list[Message]:
        f = self.settings.forks
        scored = {t.trial_id: (t, _finished(state, t.trial_id)[rung]) for t in alive}
        results = {tid: score(seg.metrics) for tid, (_, seg) in scored.items()}
        champion = state.tuning.champion
        inc = next((t for t in alive if t.sampler == INCUMBENT), None)
        inc_score = results[inc.trial_id] if inc is not None else None
        # the alignment to match: the incumbent's; in a race without one (trials), the best candidate's
        ref_diag = inc_score.diagonality if inc_score is not None else max(r.diagonality for r in results.values())
        required = min(f.min_diagonality, ref_diag - 0.1)
        keep = rnd.keep[rung]
        ranked = sorted(alive, key=lambda t: (not _eligible(results[t.trial_id], required),
                                              results[t.trial_id].objective, t.number))  # fmt: skip
        last_rung = rung == len(rnd.rung_steps) - 1
        notes: dict[str, Any] = {}
        if last_rung:
            winner, notes = self._winner(state, ranked, results, inc, required)
            survivors = [winner]
        else:
            survivors = ranked[:keep]
        table = [{"trial": t.trial_id, "sampler": t.sampler, "objective": results[t.trial_id].objective,
                  "diagonality": results[t.trial_id].diagonality,
                  "eligible": _eligible(results[t.trial_id], required)} for t in ranked]  # fmt: skip
        evidence = {"round": rnd.round, "rung": rung, "candidates": table, "margin": f.margin,
                    "required_diagonality": round(required, 4),
                    "incumbent_objective": inc_score.objective if inc_score else None, **notes}  # fmt: skip
        out: list[Message] = []
        for t in ranked:
            if t in survivors:
                continue
            r = results[t.trial_id]
            rel = r.objective / inc_score.objective if inc_score and inc_score.objective > 0 else None
            why = (
                f"{t.trial_id} dropped at rung {rung}: objective {r.objective:.4f}, diagonality "
                f"{r.diagonality:.2f}" + ("" if _eligible(r, required) else f" (< required {required:.2f})")
            )
            out.append(m.TrialPruned(trial_id=t.trial_id, step=scored[t.trial_id][1].end_step or 0, value=rel,
                                     reason=why, evidence=evidence))  # fmt: skip
        if not last_rung:
            return out
        w = survivors[0]
        seg = scored[w.trial_id][1]
        r = results[w.trial_id]
        kept = champion is not None and w.sampler == INCUMBENT
        if champion is None:
            why = f"first champion: {w.trial_id} after {seg.end_step} steps, objective {r.objective:.4f}"
        elif kept and len(alive) == 1:
            why = f"the champion trained on: objective {champion.objective:.4f} -> {r.objective:.4f}"
        elif kept:
            best = next((t for t in ranked if t is not w), None)
            bs = results[best.trial_id] if best else None
            why = (
                f"the champion stood: best challenger {best.trial_id if best else '-'} "
                f"{bs.objective if bs else math.nan:.4f} does not beat {r.objective:.4f} by {f.margin:.0%}"
            )
        else:
            assert inc_score is not None or champion is not None
            ref = inc_score.objective if inc_score else champion.objective
            why = (
                f"{w.trial_id} ({_changed(w.hparams, champion.hparams)}) beat the champion: {r.objective:.4f} < "
                f"{ref:.4f} x (1 - {f.margin:g})"
            )
        out.append(m.ChampionPromoted(segment_id=seg.segment_id, trial_id=w.trial_id, checkpoint=seg.checkpoint or "",
                                      checkpoint_sha256=seg.checkpoint_sha256 or "", objective=r.objective,
                                      previous_objective=champion.objective if champion else None,
                                      step=seg.end_step or 0, hparams=dict(seg.hparams), kept=kept, reason=why,
                                      evidence={**evidence, "diagonality": r.diagonality}))  # fmt: skip
        return out

    def _winner(self, state: TunerState, ranked: list[Trial], results: Mapping[str, Score], inc: Trial | None,
                required: float) -> tuple[Trial, dict[str, Any]]:  # fmt: skip
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
        good = [t for t in ranked if t is not inc and t.trial_id not in deferred
                and _eligible(results[t.trial_id], required)
                and results[t.trial_id].objective < i.objective * (1 - f.margin)]  # fmt: skip
        notes: dict[str, Any] = {"deferred_lr_decreases": deferred} if deferred else {}
        if not good:
            return inc, notes
        best = min(results[t.trial_id].objective for t in good)
        ties = [t for t in good if results[t.trial_id].objective <= best * (1 + f.tie_margin)]
        winner = min(ties, key=lambda t: (self._distance(t.hparams, inc.hparams, log_only=True),
                                          self._distance(t.hparams, inc.hparams), t.number))  # fmt: skip
        if len(ties) > 1:
            notes["ties"] = [t.trial_id for t in ties]
            notes["tie_rule"] = (f"within {f.tie_margin:.0%} of the best: the smallest step of the log-scale values "
                                 "(the learning rate) wins, then the smallest change")  # fmt: skip
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


def _eligible(s: Score, required: float) -> bool:
    return math.isfinite(s.objective) and s.diagonality >= required


def _finished(state: TunerState, trial_id: str) -> list[Segment]:
    return [s for s in segments_of(state, trial_id) if s.status == "finished"]


def _rung_start(segs: list[Segment], rung: int) -> int:
    """The scheduled_seq of the last finished segment before ``rung`` (0 for rung 0)."""
    finished = [s for s in segs if s.status == "finished"]
    return finished[rung - 1].scheduled_seq if rung > 0 and len(finished) >= rung else 0


def _changed(new: Mapping[str, Any], old: Mapping[str, Any]) -> str:
    diff = [f"{k}={_fmt(v)}" for k, v in new.items() if old.get(k) != v]
    return ", ".join(diff) or "same hyperparameters"


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _trial_proposed(number: int, hp: Mapping[str, Any], sampler: str, reason: str,
                    evidence: Mapping[str, Any]) -> m.TrialProposed:  # fmt: skip
    return m.TrialProposed(trial_id=f"t{number}", number=number, hparams=dict(hp), sampler=sampler, reason=reason,
                           evidence=dict(evidence))  # fmt: skip
