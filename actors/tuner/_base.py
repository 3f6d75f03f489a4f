"""The strategy interface, and the settings every strategy reads from the recorded config.

    strategy = STRATEGIES[name](TuningSettings.from_config(state.run.config))
    messages = strategy.decide(state)     # what is due now, given everything on record

A strategy is a pure function of the tuner state: it keeps nothing between calls, so a
restarted tuner decides exactly what the old one would have from the same log. It
returns the decision events to propose (``TrialProposed``, ``RoundPlanned``,
``SegmentScheduled``, ``TrialPruned``, ``ChampionPromoted``, ``StopDecided``); the
tuner actor proposes them and waits until they are committed before deciding again.

Imports the standard library, ``protocol`` and ``state`` only.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...protocol import Message
from ...state.model import Segment, TunerState


@dataclass(frozen=True, slots=True)
class ForksSettings:
    warmup_steps: int = 30
    first_round_candidates: int = 4
    candidates: int = 2
    probe_steps: int = 30
    exploit_steps: int = 150
    margin: float = 0.02
    tie_margin: float = 0.03
    min_diagonality: float = 0.5
    ladder_factor: float = 3.0
    wide_factor: float = 10.0
    cooldown_at: float = 0.7


@dataclass(frozen=True, slots=True)
class PbtSettings:
    population: int = 4
    interval_steps: int = 50
    quantile: float = 0.25
    perturb_factor: float = 1.25
    resample_probability: float = 0.25


@dataclass(frozen=True, slots=True)
class TuningSettings:
    seed: int = 0
    sampler: str = "tpe"
    n_startup_trials: int = 4
    n_trials: int = 20
    budget_steps: int | None = 600
    start_checkpoint: str | None = None
    search_space: Mapping[str, Any] = field(default_factory=dict)
    base_hparams: Mapping[str, Any] = field(default_factory=dict)
    forks: ForksSettings = field(default_factory=ForksSettings)
    pbt: PbtSettings = field(default_factory=PbtSettings)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TuningSettings:
        """From the config as ``RunStarted`` recorded it (``state.run.config``)."""
        forks = ForksSettings(**{k: v for k, v in config.get("forks", {}).items() if k in ForksSettings.__slots__})
        pbt = PbtSettings(**{k: v for k, v in config.get("pbt", {}).items() if k in PbtSettings.__slots__})
        return cls(
            seed=config.get("seed", 0), sampler=config.get("search_algorithm", "tpe"),
            n_startup_trials=config.get("n_startup_trials", 4), n_trials=config.get("n_trials", 20),
            budget_steps=config.get("budget", {}).get("max_steps"),
            start_checkpoint=config.get("resume_from_checkpoint"),
            search_space=config.get("search_space", {}), base_hparams=config.get("trainer", {}).get("hparams", {}),
            forks=forks, pbt=pbt,
        )  # fmt: skip


def steps_spent(state: TunerState) -> int:
    """Training steps the run has used or committed to: every segment counts, forks included."""
    total = 0
    for seg in state.tuning.segments.values():
        if seg.status == "failed":
            total += max(0, (seg.last_step or seg.start_step) - seg.start_step)
        else:
            total += seg.steps
    return total


def announced_hparams(state: TunerState) -> Mapping[str, Any] | None:
    """The trainer's hyperparameter announcement (type, range, default, class by name), from its first worker."""
    workers = sorted(state.tuning.workers.values(), key=lambda w: w.worker_id)
    return workers[0].hparams if workers else None


def segments_of(state: TunerState, trial_id: str) -> list[Segment]:
    return sorted((s for s in state.tuning.segments.values() if s.trial_id == trial_id), key=lambda s: s.scheduled_seq)


class Strategy(abc.ABC):
    name: ClassVar[str]

    def __init__(self, settings: TuningSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def decide(self, state: TunerState) -> Sequence[Message]:
        """The decisions due in ``state`` (empty: nothing to do until the next event)."""
