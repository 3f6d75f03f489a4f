"""The round engine every strategy runs on: rounds of trials over rungs of steps, decided rung by rung.

    class ForksStrategy(RoundStrategy):          # forks, pbt, trials: siblings on this engine
        def plan_first_round(self, state, announced): ...   # [TrialProposed..., RoundPlanned]
        def plan_next_round(self, state, announced): ...    # once the last round has a winner

    ForksStrategy(settings).decide(state)        # the engine calls the hooks when they are due

``RoundStrategy.decide`` checks the search space against the trainer's announcement, asks
the strategy for the first round, runs each round (every trial's next rung is planned by
``actors/scheduler.py``; the round waits until every live trial has finished the same
rung), and decides a rung when it is complete (``decide_rung``: the strategy may replace
it, or only ``choose_winner``, how the last rung's winner is chosen). Then it asks the
strategy for the next round. ``plan_exploit`` is the round all strategies end with: the
champion alone.

The rung decision: candidates are ranked aligned first (``is_eligible``: a diagonality of
at least ``forks.min_diagonality``, or the reference's minus 0.1), then by the objective
(``objectives.score``); the rung keeps ``Round.keep[rung]`` and prunes the rest; the last
rung promotes its winner (``ChampionPromoted``; ``kept=True`` when the incumbent won).

Failures: a segment that failed with NaN or out-of-memory waits for the guard rails'
``RollbackPerformed`` and is re-run from its own starting checkpoint with the
hyperparameters the guard chose (at most ``MAX_RERUNS`` times, then the trial is
pruned); an aborted one is run again; a lost or broken challenger is pruned; a lost or
broken incumbent stops the run (``StopDecided`` rule ``fatal_error``).

Imports the standard library, ``protocol``, ``state``, ``actors/scheduler.py`` and the
tuner package's ``_base``, ``objectives`` and ``space`` only: never a strategy module.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ...protocol import Message
from ...protocol import messages as m
from ...protocol import metrics as mx
from ...state.model import Round, Segment, Trial, TunerState
from ...state.queries import announced_hparams, segments_of, steps_spent
from ..scheduler import plan_segment
from ._base import Strategy, TuningSettings
from .objectives import Requirement, Score, race_requirement, score
from .space import SearchSpace

MAX_RERUNS = 2  # rollbacks of one rung of one trial before the trial is given up
INCUMBENT = "incumbent"


class RoundStrategy(Strategy):
    """A strategy as rounds: it plans them (the hooks), the engine runs and decides them."""

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
                return [
                    m.StopDecided(
                        rule="fatal_error",
                        reason="the search space does not fit the trainer: " + "; ".join(problems),
                        evidence={"problems": problems},
                    )
                ]
            return self.plan_first_round(state, announced)
        if rounds[-1].winner is None:
            return self._advance(state, rounds[-1])
        return self.plan_next_round(state, announced)

    # --- what a strategy plans ------------------------------------------------------------

    @abc.abstractmethod
    def plan_first_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        """Round 0's trials and plan (``TrialProposed``..., ``RoundPlanned``)."""

    @abc.abstractmethod
    def plan_next_round(self, state: TunerState, announced: Mapping[str, Any]) -> list[Message]:
        """The next round once the last one is decided (empty: nothing more to train)."""

    def plan_exploit(self, state: TunerState, steps: int, hp: Mapping[str, Any]) -> list[Message]:
        """A round of the champion alone for ``steps``: the steps stay on the lineage."""
        number = len(state.tuning.trials)
        n = len(state.tuning.rounds)
        trial = propose_trial(number, hp, INCUMBENT, "the champion trains on with its hyperparameters", {})
        champion = state.tuning.champion
        assert champion is not None
        plan = m.RoundPlanned(
            round=n,
            trials=(trial.trial_id,),
            from_checkpoint=champion.checkpoint,
            from_sha256=champion.checkpoint_sha256,
            start_step=champion.step,
            rung_steps=(steps,),
            keep=(1,),
            reason=f"exploit: the champion trains {steps} steps on its lineage",
            evidence={"kind": "exploit", "steps_spent": steps_spent(state), "budget_steps": self.settings.budget_steps},
        )
        return [trial, plan]

    # --- running a round ---------------------------------------------------------------------

    def _advance(self, state: TunerState, rnd: Round) -> list[Message]:
        trials = [state.tuning.trials[t] for t in rnd.trials]
        alive = [t for t in trials if t.status != "pruned"]
        segs = {t.trial_id: segments_of(state, t.trial_id) for t in alive}
        if any(s.status in ("scheduled", "running") for ss in segs.values() for s in ss):
            return []  # a segment of this round is still on its way
        done = {t.trial_id: sum(1 for s in segs[t.trial_id] if s.status == "finished") for t in alive}
        if not alive:
            return [
                m.StopDecided(
                    rule="fatal_error",
                    reason=f"every trial of round {rnd.round} failed",
                    evidence={"round": rnd.round, "trials": list(rnd.trials)},
                )
            ]
        low = min(done.values())
        if low > 0 and all(d == low for d in done.values()):
            rung = low - 1
            if len(alive) > rnd.keep[rung] or rung == len(rnd.rung_steps) - 1:
                return self.decide_rung(state, rnd, rung, alive)
            # the survivors of this rung go on to the next one
        out: list[Message] = []
        for t in alive:
            if done[t.trial_id] != low:
                continue
            last = segs[t.trial_id][-1] if segs[t.trial_id] else None
            if last is not None and last.status == "failed":
                out += self._after_failure(state, rnd, t, last, low, len(alive))
            else:
                out.append(plan_segment(state, rnd, t, low))
        return out

    def _after_failure(
        self, state: TunerState, rnd: Round, t: Trial, last: Segment, rung: int, n_alive: int
    ) -> list[Message]:
        segs = segments_of(state, t.trial_id)
        failed_here = [s for s in segs if s.status == "failed" and s.scheduled_seq > _rung_start(segs, rung)]
        # a guard with nothing left to try: on the lineage the stop controller ends the run; on one
        # trial of a race (a probe, a member: the trip names it) that trial is pruned below
        gave_up = [g for g in state.health.guards if g.subject == last.segment_id and g.gave_up]
        if any(g.trial_id is None for g in gave_up):
            return []
        given_up = bool(gave_up)
        if (
            last.failure in ("nan", "oom")
            and not given_up
            and len([s for s in failed_here if s.failure != "aborted"]) <= MAX_RERUNS
        ):
            if last.rollback is None:
                return []  # the guard rails decide how to roll back (or give up on the trial)
            return [plan_segment(state, rnd, t, rung, rerun=last.rollback, attempt=len(failed_here))]
        if last.failure == "aborted":  # stopped by an operator; the run was resumed: the same rung again
            return [plan_segment(state, rnd, t, rung, attempt=len(failed_here), kind="re")]
        if t.sampler == INCUMBENT and n_alive == 1:
            return [
                m.StopDecided(
                    rule="fatal_error",
                    reason=f"segment {last.segment_id} of the champion's lineage "
                    f"failed ({last.failure}: {last.failure_detail})",
                    evidence={"segment_id": last.segment_id, "failure": last.failure, "failures": len(failed_here)},
                )
            ]
        return [
            m.TrialPruned(
                trial_id=t.trial_id,
                step=last.last_step or last.start_step,
                value=None,
                reason=f"{t.trial_id} failed {len(failed_here)} time(s) ({last.failure}); given up"
                + (" (the guard rails had nothing left to try)" if given_up else ""),
                evidence={
                    "segment_id": last.segment_id,
                    "failure": last.failure,
                    "detail": (last.failure_detail or "")[:500],
                },
            )
        ]

    # --- deciding a rung ---------------------------------------------------------------------

    def decide_rung(self, state: TunerState, rnd: Round, rung: int, alive: list[Trial]) -> list[Message]:
        f = self.settings.forks
        scored = {t.trial_id: (t, finished_segments(state, t.trial_id)[rung]) for t in alive}
        results = {tid: score(seg.metrics) for tid, (_, seg) in scored.items()}
        champion = state.tuning.champion
        inc = next((t for t in alive if t.sampler == INCUMBENT), None)
        inc_score = results[inc.trial_id] if inc is not None else None
        # the alignment and stop rate to match: the incumbent's; in a race without one (trials), the best candidate's
        required = race_requirement(results.values(), f.min_diagonality, f.min_gate_stop_rate, inc_score)
        keep = rnd.keep[rung]
        ranked = sorted(
            alive,
            key=lambda t: (not is_eligible(results[t.trial_id], required), results[t.trial_id].objective, t.number),
        )
        last_rung = rung == len(rnd.rung_steps) - 1
        notes: dict[str, Any] = {}
        if last_rung:
            winner, notes = self.choose_winner(state, ranked, results, inc, required)
            survivors = [winner]
        else:
            survivors = ranked[:keep]
        table = candidates_table(ranked, results, required)
        evidence = {
            "round": rnd.round,
            "rung": rung,
            "candidates": table,
            "margin": f.margin,
            **required.evidence(),
            "incumbent_objective": inc_score.objective if inc_score else None,
            **notes,
        }
        out: list[Message] = []
        for t in ranked:
            if t in survivors:
                continue
            r = results[t.trial_id]
            rel = r.objective / inc_score.objective if inc_score and inc_score.objective > 0 else None
            why = (
                f"{t.trial_id} dropped at rung {rung}: objective {r.objective:.4f}, diagonality "
                f"{r.diagonality:.2f}" + required.shortfall(r)
            )
            out.append(
                m.TrialPruned(
                    trial_id=t.trial_id,
                    step=scored[t.trial_id][1].end_step or 0,
                    value=rel,
                    reason=why,
                    evidence=evidence,
                )
            )
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
            if r.objective < ref * (1 - f.margin):
                why = (
                    f"{w.trial_id} ({describe_changes(w.hparams, champion.hparams)}) beat the champion: "
                    f"{r.objective:.4f} < {ref:.4f} x (1 - {f.margin:g})"
                )
            else:  # a race without an incumbent (a Hyperband bracket) hands on its winner whatever it scored
                why = (
                    f"{w.trial_id} won round {rnd.round} ({r.objective:.4f}; the champion before it had "
                    f"{ref:.4f}): a race without an incumbent hands on its winner"
                )
        out.append(
            m.ChampionPromoted(
                segment_id=seg.segment_id,
                trial_id=w.trial_id,
                checkpoint=seg.checkpoint or "",
                checkpoint_sha256=seg.checkpoint_sha256 or "",
                objective=r.objective,
                previous_objective=champion.objective if champion else None,
                step=seg.end_step or 0,
                hparams=dict(seg.hparams),
                kept=kept,
                reason=why,
                evidence={**evidence, mx.DIAGONALITY: r.diagonality},
            )
        )
        return out

    def choose_winner(
        self,
        state: TunerState,
        ranked: list[Trial],
        results: Mapping[str, Score],
        inc: Trial | None,
        required: Requirement,
    ) -> tuple[Trial, dict[str, Any]]:
        """The last rung's winner and notes for the evidence: here the best ranked (a race without a margin)."""
        return ranked[0], {}


def candidates_table(ranked: list[Trial], results: Mapping[str, Score], required: Requirement) -> list[dict[str, Any]]:
    """The candidates a rung decision weighed, best first: what its evidence shows."""
    table = []
    for t in ranked:
        r = results[t.trial_id]
        row: dict[str, Any] = {"trial": t.trial_id, "sampler": t.sampler, "objective": r.objective}
        row[mx.DIAGONALITY] = r.diagonality
        if r.gate_stop_rate is not None:
            row[mx.FR_GATE_STOP_RATE] = r.gate_stop_rate
        row["eligible"] = required.met_by(r)
        table.append(row)
    return table


def is_eligible(s: Score, required: Requirement) -> bool:
    return required.met_by(s)


def finished_segments(state: TunerState, trial_id: str) -> list[Segment]:
    return [s for s in segments_of(state, trial_id) if s.status == "finished"]


def _rung_start(segs: list[Segment], rung: int) -> int:
    """The scheduled_seq of the last finished segment before ``rung`` (0 for rung 0)."""
    finished = [s for s in segs if s.status == "finished"]
    return finished[rung - 1].scheduled_seq if rung > 0 and len(finished) >= rung else 0


def describe_changes(new: Mapping[str, Any], old: Mapping[str, Any]) -> str:
    diff = [f"{k}={_fmt(v)}" for k, v in new.items() if old.get(k) != v]
    return ", ".join(diff) or "same hyperparameters"


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def propose_trial(
    number: int, hp: Mapping[str, Any], sampler: str, reason: str, evidence: Mapping[str, Any]
) -> m.TrialProposed:
    return m.TrialProposed(
        trial_id=f"t{number}", number=number, hparams=dict(hp), sampler=sampler, reason=reason, evidence=dict(evidence)
    )
