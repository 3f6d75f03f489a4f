"""The tuner: strategies that choose hyperparameters, behind one small interface.

    Tuner()      # an actor core; the strategy is the one the run's config names

Consumes: every committed event (it decides from the folded state; metric events only
wake it when a decision was deferred). Emits what its strategy decides:
``TrialProposed``, ``RoundPlanned``, ``SegmentScheduled``, ``TrialPruned``,
``ChampionPromoted``, and ``StopDecided`` (``fatal_error``) when tuning cannot go on.

Strategies (one module each, ``_base.Strategy``): ``forks`` (the default), ``pbt``
(population-based training), ``trials`` (from scratch, successive halving) and ``none``
(the forks strategy with an empty search space: one lineage trained with the starting
hyperparameters, which is also the control arm of ``bench/tuning_gain.py``). The three are
siblings on one round engine (``engine.RoundStrategy``: running rounds, scheduling their
segments through ``actors/scheduler.py``, failures, the rung decision); none imports another.

After proposing, the tuner waits until its own proposals are in the state it sees
(``proposed_seq``) before deciding again, so one decision is never taken twice; after a
restart, ``resume`` re-derives what is due from the log alone.

Imports the standard library, ``protocol``, ``state`` and the actors package only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ...protocol import Envelope
from ...protocol import messages as m
from ...state.model import TunerState
from ..runtime import ActorCore, Out
from ._base import Strategy, TuningSettings
from .forks import ForksStrategy
from .pbt import PbtStrategy
from .trials import TrialsStrategy

STRATEGIES = frozenset({"forks", "pbt", "trials", "none"})


def make_strategy(name: str, settings: TuningSettings) -> Strategy | None:
    if name == "forks":
        return ForksStrategy(settings)
    if name == "trials":
        return TrialsStrategy(settings)
    if name == "pbt":
        return PbtStrategy(settings)
    if name == "none":
        return ForksStrategy(replace(settings, search_space={}))
    return None


class Tuner(ActorCore):
    name = "tuner"

    def __init__(self) -> None:
        self._strategy: Strategy | None = None
        self._due = False

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        if isinstance(env.data, m.MetricsObserved | m.HparamsApplied | m.ActorReady) and not self._due:
            return ()
        return self._decide(state)

    def resume(self, state: TunerState) -> Sequence[Out]:
        return self._decide(state)

    def _decide(self, state: TunerState) -> Sequence[Out]:
        if state.run is None:
            return ()
        if state.last_seq < self.proposed_seq:
            self._due = True  # our own last decisions are not in this state yet
            return ()
        self._due = False
        if self._strategy is None:
            self._strategy = make_strategy(state.run.strategy, TuningSettings.from_config(state.run.config))
            if self._strategy is None:
                return ()
        return [Out(msg) for msg in self._strategy.decide(state)]
