"""The stop controller: decides when the run is done, and says why.

Consumes: ``StopRequested``, ``RunStarted``/``RunResumed`` (through resume).
Emits: ``StopDecided`` with the rule, a sentence and the evidence.

Rules in this build: an operator's request (``stop`` command, SIGINT/SIGTERM)
and "nothing to tune" when the configured strategy is not available. Plateau,
budgets and quality targets are rules of the same shape.
Imports ``protocol``, ``state`` and the runtime only.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..protocol import Envelope
from ..protocol import messages as m
from ..state.model import TunerState
from .runtime import ActorCore, Out


class Stopper(ActorCore):
    name = "stopper"

    def __init__(self, *, available_strategies: frozenset[str]) -> None:
        self.available_strategies = available_strategies

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        if isinstance(env.data, m.StopRequested):
            return self._operator_stop(state, env.data, env.seq)
        return ()

    def resume(self, state: TunerState) -> Sequence[Out]:
        if state.control.phase != "running" or state.run is None:
            return ()
        if state.control.stop_requests:
            req = state.control.stop_requests[-1]
            return self._operator_stop(state, m.StopRequested(source=req.source, reason=req.reason), req.seq)
        if state.run.strategy not in self.available_strategies:
            decided = m.StopDecided(
                rule="nothing_to_tune",
                reason=f"strategy {state.run.strategy!r} is not available in this build, so there is nothing to tune",
                evidence={"strategy": state.run.strategy, "available": sorted(self.available_strategies)},
            )
            return [Out(decided)]
        return ()

    def _operator_stop(self, state: TunerState, req: m.StopRequested, seq: int) -> Sequence[Out]:
        if state.control.phase != "running":
            return ()
        decided = m.StopDecided(
            rule="operator",
            reason=f"stop requested by {req.source}: {req.reason}",
            evidence={"source": req.source, "request_seq": seq, "global_step": state.progress.global_step},
        )
        return [Out(decided)]
