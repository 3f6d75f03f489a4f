"""A copy of the tuning run in an Optuna storage, for optuna-dashboard (``optuna_storage`` in the config).

    mirror = OptunaMirror("sqlite:///runs/optuna.db")
    mirror.sync(state)          # every trial of every decided round, once

The tuner's own study is a projection of the log, rebuilt for every proposal
(``tuner.space``); this is another projection of the same log, written to a storage URL
so that ``optuna-dashboard <url>`` shows the run: one study per tuning run (named after
the run id), one Optuna trial per trial on record with its searched hyperparameters, the
unweighted objective of each finished segment as an intermediate value on the global
step, and its state: ``PRUNED`` (dropped by a race or a PBT selection), ``FAIL`` (never
finished a segment) or ``COMPLETE``. The user attributes carry the trial id, sampler,
round and every hyperparameter it trained with.

A trial is written once its round is decided, so its record is final; the trial id in
the user attributes makes ``sync`` idempotent, after a restart too. Called from the
projections thread only (an unreachable storage is logged there, never raised into the
run). Imports Optuna lazily.
"""

from __future__ import annotations

import math
from typing import Any

import structlog

from ...state.model import Round, TunerState
from ..tuner.objectives import score
from ..tuner.space import SearchSpace, space_value

log = structlog.get_logger("optuna_mirror")

TRIAL_ATTR = "smart_tuner.trial_id"


class OptunaMirror:
    def __init__(self, storage: str) -> None:
        self.storage = storage
        self.study: Any = None
        self.written: set[str] = set()

    def sync(self, state: TunerState) -> int:
        """Write the trials of decided rounds not in the storage yet; how many were written."""
        if state.run is None:
            return 0
        if self.study is None:
            self._open(state)
        space = SearchSpace.from_config(state.run.config.get("search_space", {}))
        n = 0
        for rnd in state.tuning.rounds:
            if rnd.winner is None:
                continue
            for trial_id in rnd.trials:
                if trial_id not in self.written:
                    self.study.add_trial(self._frozen(state, rnd, trial_id, space))
                    self.written.add(trial_id)
                    n += 1
        return n

    def _open(self, state: TunerState) -> None:
        import optuna

        assert state.run is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            storage=self.storage, study_name=state.run.run_id, direction="minimize", load_if_exists=True
        )
        self.study.set_user_attr("strategy", state.run.strategy)
        self.study.set_user_attr("objective", "unweighted validation loss: mel after postnet + gate BCE")
        self.written = {t.user_attrs.get(TRIAL_ATTR) for t in self.study.get_trials(deepcopy=False)} - {None}

    def _frozen(self, state: TunerState, rnd: Round, trial_id: str, space: SearchSpace) -> Any:
        import optuna

        trial = state.tuning.trials[trial_id]
        segments = sorted(
            (s for s in state.tuning.segments.values() if s.trial_id == trial_id), key=lambda s: s.scheduled_seq
        )
        intermediate: dict[int, float] = {}
        for seg in segments:
            if seg.status == "finished" and seg.metrics:
                value = score(seg.metrics).objective
                if math.isfinite(value):
                    intermediate[seg.end_step or 0] = value
        params, dists = {}, {}
        for p in space.params:
            value = space_value(p, trial.hparams.get(p.name))
            if p.contains(value):  # a value a guard rail moved out of the space is an attribute only
                params[p.name], dists[p.name] = value, p.distribution()
        if not intermediate:
            status = optuna.trial.TrialState.FAIL
        elif trial.status == "pruned":
            status = optuna.trial.TrialState.PRUNED
        else:
            status = optuna.trial.TrialState.COMPLETE
        last = intermediate[max(intermediate)] if intermediate else None
        return optuna.trial.create_trial(
            params=params,
            distributions=dists,
            state=status,
            value=last if status == optuna.trial.TrialState.COMPLETE else None,
            intermediate_values=intermediate,
            user_attrs={
                TRIAL_ATTR: trial_id,
                "sampler": trial.sampler,
                "round": rnd.round,
                "winner": rnd.winner == trial_id,
                "hparams": dict(trial.hparams),
                "segments": [s.segment_id for s in segments],
            },
        )
