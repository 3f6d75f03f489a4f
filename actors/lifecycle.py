"""The run lifecycle actor: turns a stop decision into the end of the run.

Consumes: ``StopDecided``; ``ChampionTested`` (in a run with a test set, the end
waits for the champion's final measurement: ``queries.final_test_due``).
Emits: ``RunFinished`` (status ``stopped`` for an operator's stop, ``failed``
when an actor gave up, ``completed`` otherwise) with a short summary.

On resume it finishes a run whose stop was decided but never completed (the
coordinator died in between). Imports ``protocol``, ``state`` and the runtime only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..protocol import Envelope
from ..protocol import messages as m
from ..protocol import metrics as mx
from ..state.model import TunerState
from ..state.queries import final_test, final_test_due, steps_spent
from .runtime import ActorCore, Out

FAILURE_RULES = frozenset({"actor_failure", "fatal_error", "guard"})  # guard: a pathology it could not correct


def run_status(rule: str) -> m.RunStatus:
    if rule == "operator":
        return "stopped"
    return "failed" if rule in FAILURE_RULES else "completed"


def summarize(state: TunerState) -> dict[str, Any]:
    """The few numbers a person wants at the end of a run."""
    tuning = state.tuning
    segments = tuning.segments.values()
    champion = tuning.champion
    seg = tuning.segments.get(champion.segment_id) if champion else None
    winners = {r.winner for r in tuning.rounds}
    start = tuning.trials.get("t0")
    test = final_test(state)
    tested = dict(test.metrics) if test is not None else {}
    prefix = "ema_" if f"ema_{mx.VAL_OBJECTIVE}" in tested else ""  # the averaged weights, when kept, are the answer
    changed = (
        {k: v for k, v in champion.hparams.items() if start is None or start.hparams.get(k) != v} if champion else {}
    )
    return {
        "segments": len(tuning.segments),
        "forks": sum(1 for s in segments if s.trial_id not in winners),
        "segments_failed": sum(1 for s in segments if s.status == "failed"),
        "trials": len(tuning.trials),
        "rounds": len(tuning.rounds),
        "promotions": tuning.promotions,
        "rollbacks": len(state.health.rollbacks),
        "guard_trips": len(state.health.guards),
        "steps_spent": steps_spent(state),
        "global_step": state.progress.global_step,
        "champion_checkpoint": champion.checkpoint if champion else None,
        "champion_objective": champion.objective if champion else None,
        "champion_diagonality": seg.metrics.get(mx.DIAGONALITY) if seg else None,
        "champion_hparams": dict(champion.hparams) if champion else None,
        "changed_hparams": changed,
        **(
            {
                "test_objective": tested.get(prefix + mx.VAL_OBJECTIVE),
                "test_gate_stop_rate": tested.get(prefix + mx.FR_GATE_STOP_RATE),
                "test_mcd_dtw": tested.get(prefix + mx.FR_MCD_DTW),
            }
            if tested
            else {}
        ),
    }


class Lifecycle(ActorCore):
    name = "lifecycle"

    def __init__(self, awaits_test: bool = False) -> None:
        self.awaits_test = awaits_test  # the run has a tester: the end waits for its final measurement

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        if isinstance(env.data, m.StopDecided | m.ChampionTested):
            return self._finish(state)
        return ()

    def resume(self, state: TunerState) -> Sequence[Out]:
        if state.control.phase == "stopping":
            return self._finish(state)
        return ()

    def _finish(self, state: TunerState) -> Sequence[Out]:
        stop = state.control.stop
        if stop is None or state.control.phase != "stopping":
            return ()
        if self.awaits_test and final_test_due(state):
            return ()
        finished = m.RunFinished(status=run_status(stop.rule), reason=stop.reason, summary=summarize(state))
        return [Out(finished)]
