"""The strategy interface, and the settings every strategy reads from the recorded config.

    strategy = STRATEGIES[name](TuningSettings.from_config(state.run.config))
    messages = strategy.decide(state)     # what is due now, given everything on record

A strategy is a pure function of the tuner state: it keeps nothing between calls, so a
restarted tuner decides exactly what the old one would have from the same log. It
returns the decision events to propose (``TrialProposed``, ``RoundPlanned``,
``SegmentScheduled``, ``TrialPruned``, ``ChampionPromoted``, ``StopDecided``); the
tuner actor proposes them and waits until they are committed before deciding again.

Every setting is declared once, by its pydantic model in ``state.config``: the recorded
config is the whole ``TunerConfig`` dumped, every key present, and the strategies' own
sections are validated again into their models (``forks``: ``ForksConfig``, ``pbt``:
``PbtConfig``) and read as they are; no default is repeated here.

Imports the standard library, ``protocol`` and ``state`` only.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ...protocol import Message
from ...state.config import ForksConfig, PbtConfig
from ...state.model import TunerState


@dataclass(frozen=True, slots=True)
class TuningSettings:
    """What the strategies read of the run's config, by the names they use."""

    seed: int
    sampler: str
    n_startup_trials: int
    n_trials: int
    budget_steps: int | None
    start_checkpoint: str | None
    search_space: Mapping[str, Any]  # as recorded: name -> a SearchParam's fields (``none`` empties it)
    base_hparams: Mapping[str, Any]
    forks: ForksConfig
    pbt: PbtConfig

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TuningSettings:
        """From the config as ``RunStarted`` recorded it (``state.run.config``: every key of ``TunerConfig``)."""
        return cls(
            seed=config["seed"],
            sampler=config["search_algorithm"],
            n_startup_trials=config["n_startup_trials"],
            n_trials=config["n_trials"],
            budget_steps=config["budget"]["max_steps"],
            start_checkpoint=config["resume_from_checkpoint"],
            search_space=config["search_space"],
            base_hparams=config["trainer"]["hparams"],
            forks=ForksConfig.model_validate(config["forks"]),
            pbt=PbtConfig.model_validate(config["pbt"]),
        )


class Strategy(abc.ABC):
    name: ClassVar[str]

    def __init__(self, settings: TuningSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def decide(self, state: TunerState) -> Sequence[Message]:
        """The decisions due in ``state`` (empty: nothing to do until the next event)."""
