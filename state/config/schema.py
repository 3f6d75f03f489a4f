"""The pydantic models of ``smart_tuner.yaml``: every section, the default search space and
``TunerConfig``, the whole document (with its cross-section validators).

Imports the standard library, pydantic, ``base`` and ``external`` only.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
from typing import Literal, Self

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from .base import _IDENTIFIER, HASHED_WHEN_SET, HparamValue, _Frozen
from .external import ExternalConfig, _external_type_problem

SearchType = Literal["loguniform", "uniform", "int", "categorical"]
Choice = str | int | float | bool


class SearchParam(_Frozen):
    """One hyperparameter's search range: a bounded number or a list of choices."""

    type: SearchType
    low: float | int | None = None
    high: float | int | None = None
    choices: list[Choice] | None = None
    step: float | int | None = None

    @field_validator("low", "high", "step", mode="before")
    @classmethod
    def _check_number(cls, value: object) -> object:
        # checked before the union so that an error names the value once, not once per member type
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return value
        raise ValueError("expected a finite number")

    @field_validator("choices", mode="before")
    @classmethod
    def _check_choices(cls, value: object) -> object:
        if isinstance(value, list):
            for i, choice in enumerate(value):
                if not isinstance(choice, str | int | float) or (
                    isinstance(choice, float) and not math.isfinite(choice)
                ):
                    raise ValueError(f"choices[{i}] must be a string, number or bool, got {choice!r}")
        return value

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if self.type == "categorical":
            self._check_categorical()
        else:
            self._check_range()
        return self

    def _check_categorical(self) -> None:
        if self.low is not None or self.high is not None:
            raise ValueError(f"categorical takes no low/high, got low={self.low!r}, high={self.high!r}")
        if self.step is not None:
            raise ValueError(f"categorical takes no step, got step={self.step!r}")
        if not self.choices:
            raise ValueError(f"categorical needs a non-empty choices list, got choices={self.choices!r}")
        for i, choice in enumerate(self.choices):
            if choice in self.choices[:i]:  # `==`, as Optuna compares them: 1, 1.0 and True collide
                raise ValueError(f"categorical choices must be unique, got {choice!r} twice in {self.choices!r}")

    def _check_range(self) -> None:
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high, not choices, got choices={self.choices!r}")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs both low and high, got low={self.low!r}, high={self.high!r}")
        if not self.low < self.high:
            raise ValueError(f"{self.type} needs low < high, got low={self.low!r}, high={self.high!r}")
        if self.type == "loguniform":
            if self.low <= 0:
                raise ValueError(f"loguniform needs low > 0, got low={self.low!r}")
            if self.step is not None:
                raise ValueError(f"loguniform takes no step, got step={self.step!r}")
        elif self.type == "int":
            for name, value in (("low", self.low), ("high", self.high), ("step", self.step)):
                if value is not None and not isinstance(value, int):
                    raise ValueError(f"int needs integer {name}, got {name}={value!r}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"{self.type} needs step > 0, got step={self.step!r}")


class Budget(_Frozen):
    """Hard limits on the whole run; None means unlimited. 600 steps: the demo's budget (~10 min on 2 cores)."""

    max_hours: float | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=600, gt=0)
    max_gpu_hours: float | None = Field(default=None, gt=0)


class StopRules(_Frozen):
    """Early stopping: stop after `patience` tuning rounds without a `min_delta` improvement.

    ``patience`` is adapted to the phase of training: doubled while the attention is not
    yet aligned (``alignment``), as written while the objective still falls fast
    (``learning``), halved (at least 1) once the gains are small (``fine_tuning``).
    Quality targets stop the run as soon as the champion reaches both.
    """

    min_delta: float = Field(default=0.002, ge=0)
    patience: int = Field(default=4, ge=1)
    target_objective: float | None = Field(default=None, gt=0)  # unweighted val objective "good enough"
    target_diagonality: float = Field(default=0.9, ge=0, le=1)  # the alignment a target also needs


class TrainerSection(_Frozen):
    """The trainer the tuner drives: the reference Tacotron2 worker, its data and its start."""

    preset: Literal["demo", "tiny", "nvidia"] = "demo"
    dataset: str = "demo"  # demo, tiny, an LJSpeech folder or an NVIDIA filelist
    data_dir: str | None = None  # where demo/tiny corpora and mel caches go (default: the user cache)
    threads: int | None = Field(default=None, ge=1)  # torch threads per worker (default: torch's choice)
    val_count: int = Field(default=16, ge=1)
    # held-out sentences for the end-of-run test metrics and listening samples (an LJSpeech folder or
    # a filelist); default: the demo corpus's own test sentences for dataset demo, none otherwise
    test_dataset: str | None = Field(default=None, json_schema_extra=HASHED_WHEN_SET)
    listening_samples: bool = Field(default=True, json_schema_extra=HASHED_WHEN_SET)
    # or that many utterances of `dataset` held out of training and validation as the test set
    test_count: int = Field(default=0, ge=0, json_schema_extra=HASHED_WHEN_SET)
    hparams: dict[str, HparamValue] = Field(default_factory=dict)  # the starting point, over the preset
    heartbeat_s: float = Field(default=1.0, gt=0)
    heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)  # workers a segment may lose before it fails
    # Devices per trial: > 1 makes each of our workers a DDP trial under torchrun on that many GPUs (on
    # the CPU, that many gloo ranks); in external mode, the GPUs each run of the script is given.
    ddp_ranks: int = Field(default=1, ge=1, le=64)

    @field_validator("hparams")
    @classmethod
    def _check_hparam_names(cls, hparams: dict[str, HparamValue]) -> dict[str, HparamValue]:
        for name in hparams:
            if not _IDENTIFIER.match(name):
                raise ValueError(f"hyperparameter name {name!r} is not an identifier")
        return hparams

    @model_validator(mode="after")
    def _check_test_set(self) -> Self:
        if self.test_count and self.test_dataset is not None:
            raise ValueError("test_dataset and test_count both name a test set: give one of them")
        return self


class GuardsConfig(_Frozen):
    """The guard rails' thresholds (``actors/guards.py``): when each trips, how often, how far it corrects."""

    min_steps: int = Field(default=20, ge=0)  # no train-time guard before this global step (start-up noise)
    max_tries: int = Field(default=4, ge=1)  # corrections per guard on the lineage; then it gives up: the run stops
    cooldown_steps: int = Field(default=200, ge=0)  # between two trips of one validation guard
    spike_factor: float = Field(default=3.0, gt=1)  # loss_spike: train loss this many times the recent median ...
    spike_window: int = Field(default=5, ge=2)  # ... of this many reports before it
    grad_reports: int = Field(default=3, ge=1)  # grad_explode / grad_vanish: this many reports in a row ...
    grad_explode_norm: float = Field(default=100.0, gt=0)  # ... above this norm ...
    grad_explode_factor: float = Field(default=10.0, gt=1)  # ... and this many times the lineage's earlier median
    grad_vanish_norm: float = Field(default=1e-6, ge=0)  # ... or below this one
    alignment_steps: int = Field(default=300, ge=0)  # attention/gate: judged after this global step ...
    alignment_budget_share: float = Field(default=0.2, ge=0, le=1)  # ... or this share of budget.max_steps if later
    min_diagonality: float = Field(default=0.5, ge=0, le=1)  # attention: diagonal at least this ...
    aligning_rise: float = Field(default=0.05, ge=0)  # ... unless it rose this much since the validation before
    min_gate_accuracy: float = Field(default=0.8, ge=0, le=1)  # gate
    divergence: float = Field(default=0.05, gt=0)  # val objective up this share while the train objective fell


FirstRoundCandidate = Literal["ladder", "ladder-all", "wide"]
FIRST_ROUND: tuple[FirstRoundCandidate, ...] = ("ladder-all", "wide")


class ForksConfig(_Frozen):
    """The ``forks`` strategy: rounds of candidates forked from the champion's checkpoint.

    A round starts every candidate from the champion's checkpoint for ``probe_steps``
    steps, keeps the best and drops the rest (successive halving, one rung); between
    rounds the champion trains on alone for ``exploit_steps``. The first round is the
    wide one (``first_round_candidates``), later ones are small (``candidates``).
    """

    warmup_steps: int = Field(default=30, ge=1)  # from scratch with the starting hparams: nothing is decided before
    first_round_candidates: int = Field(default=3, ge=1)
    # the wide round's fixed candidates after the incumbent, in order: "ladder" (log-scale values x
    # ladder_factor), "ladder-all" (the same, the other searched values a step towards their low end),
    # "wide" (x wide_factor); slots past these (first_round_candidates) are the sampler's. The default
    # leaves "ladder" out: chosen on the benchmark suite's selection splits (docs/BENCHMARKS.md)
    first_round: list[FirstRoundCandidate] = Field(
        default_factory=lambda: list(FIRST_ROUND), json_schema_extra=HASHED_WHEN_SET
    )
    candidates: int = Field(default=2, ge=1)
    probe_steps: int = Field(default=30, ge=1)
    exploit_steps: int = Field(default=150, ge=1)
    margin: float = Field(default=0.02, ge=0, lt=1)  # relative gain a challenger needs to replace the champion
    tie_margin: float = Field(default=0.03, ge=0, lt=1)  # challengers this close to the best tie: least change wins
    min_diagonality: float = Field(default=0.5, ge=0, le=1)  # the alignment a candidate needs to win
    # the share of validation sentences a candidate's stop gate must end in time, free-running, to win
    # (or the incumbent's minus 0.1 while it does not, the best candidate's in a race without one;
    # 0 turns it off; see actors/tuner/objectives.py)
    min_gate_stop_rate: float = Field(default=0.9, ge=0, le=1, json_schema_extra=HASHED_WHEN_SET)
    ladder_factor: float = Field(default=3.0, gt=1)  # first round: the champion's log-scale values x this
    wide_factor: float = Field(default=10.0, gt=1)  # first round: ... and x this
    cooldown_at: float = Field(default=0.7, ge=0, le=1)  # share of the budget before which no lr decrease wins

    @field_validator("first_round", mode="before")
    @classmethod
    def _listed(cls, names: object) -> object:
        return list(names) if isinstance(names, tuple) else names  # as a recorded event holds it

    @field_validator("first_round")
    @classmethod
    def _check_first_round(cls, names: list[FirstRoundCandidate]) -> list[FirstRoundCandidate]:
        if len(set(names)) != len(names):
            raise ValueError(f"a candidate named twice: {names}")
        return names


class PbtConfig(_Frozen):
    """The ``pbt`` strategy: population-based training (Jaderberg et al. 2017), truncation selection.

    ``population`` members train side by side for ``interval_steps``; then the worst
    ``quantile`` of them copy the checkpoint of a member of the best ``quantile`` (exploit)
    and perturb its hyperparameters by ``perturb_factor`` up or down, or resample one from
    the sampler with ``resample_probability`` (explore). The rest train on unchanged.
    """

    population: int = Field(default=4, ge=2, le=64)
    interval_steps: int = Field(default=50, ge=1)
    quantile: float = Field(default=0.25, gt=0, le=0.5)
    perturb_factor: float = Field(default=1.25, gt=1)
    resample_probability: float = Field(default=0.25, ge=0, le=1)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BusConfig(_Frozen):
    """The message bus between the tuner and the trainers."""

    transport: Literal["ipc", "tcp"] = "ipc"
    host: str = "127.0.0.1"
    worker_port: int = Field(default=0, ge=0, le=65535)  # tcp: the worker channel's port (0: any free one)
    hwm: int = Field(default=10000, gt=0)
    max_message_bytes: int = Field(default=1048576, ge=1024, le=64 * 1024 * 1024)
    linger_ms: int = Field(default=1000, ge=0)
    curve_server_secret: str | None = None
    allow_keys: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_encryption(self) -> Self:
        if self.transport == "tcp" and not _is_loopback(self.host) and self.curve_server_secret is None:
            raise ValueError(
                f"tcp transport on non-loopback host {self.host!r} requires curve_server_secret "
                "(plaintext ZeroMQ must not leave this machine)"
            )
        return self


class JournalConfig(_Frozen):
    """Durability of the event log."""

    fsync: bool = True
    group_commit_max: int = Field(default=4096, gt=0)
    state_write_interval_s: float = Field(default=1.0, ge=0)
    snapshot_every: int = Field(default=10000, gt=0)


class AlertsConfig(_Frozen):
    """Apprise notification targets; URLs may carry tokens, so they are SecretStr."""

    urls: list[SecretStr] = Field(default_factory=list)
    min_severity: Literal["info", "warning", "error", "critical"] = "info"
    rate_limit_per_min: int = Field(default=20, gt=0)


def _default_search_space() -> dict[str, SearchParam]:
    return {
        "learning_rate": SearchParam(type="loguniform", low=1e-4, high=3e-2),
        "p_encoder_dropout": SearchParam(type="uniform", low=0.0, high=0.5),
        "p_postnet_dropout": SearchParam(type="uniform", low=0.0, high=0.5),
        "p_attention_dropout": SearchParam(type="uniform", low=0.0, high=0.3),
        "p_decoder_dropout": SearchParam(type="uniform", low=0.0, high=0.3),
        "adam_beta2": SearchParam(type="categorical", choices=[0.98, 0.999]),
    }


_SAMPLER_PACKAGES = {"cmaes": ("cmaes",), "gp": ("scipy", "torch"), "qmc": ("scipy",)}  # beyond Optuna


class TunerConfig(_Frozen):
    """The whole of ``smart_tuner.yaml``."""

    seed: int = Field(default=0, ge=0)
    strategy: Literal["forks", "pbt", "trials", "none"] = "forks"
    search_algorithm: Literal["tpe", "cmaes", "gp", "qmc", "random", "grid"] = "tpe"
    n_startup_trials: int = Field(default=4, ge=0)
    n_trials: int = Field(default=20, ge=1)
    resume_from_checkpoint: str | None = None
    # ``run --fork-from RUN:SEGMENT`` writes where this run began (informational, on record)
    forked_from: str | None = Field(default=None, json_schema_extra=HASHED_WHEN_SET)
    search_space: dict[str, SearchParam] = Field(default_factory=_default_search_space)
    n_gpus: int = Field(default=0, ge=0)  # 0: CPU only
    budget: Budget = Field(default_factory=Budget)
    stop: StopRules = Field(default_factory=StopRules)
    guards: GuardsConfig = Field(default_factory=GuardsConfig, json_schema_extra=HASHED_WHEN_SET)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    forks: ForksConfig = Field(default_factory=ForksConfig)
    pbt: PbtConfig = Field(default_factory=PbtConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    journal: JournalConfig = Field(default_factory=JournalConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    external: ExternalConfig | None = None  # null: native mode (the built-in trainer)
    # An Optuna storage URL (e.g. sqlite:////abs/path/optuna.db) to mirror the run into for
    # optuna-dashboard; may hold a password, so keep it in the environment: ${OPTUNA_STORAGE}.
    optuna_storage: SecretStr | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("search_space")
    @classmethod
    def _check_names(cls, space: dict[str, SearchParam]) -> dict[str, SearchParam]:
        for name in space:
            if not _IDENTIFIER.match(name):
                raise ValueError(f"parameter name {name!r} is not an identifier (must match {_IDENTIFIER.pattern})")
        return space

    @field_validator("search_space")
    @classmethod
    def _check_grid(cls, space: dict[str, SearchParam], info: ValidationInfo) -> dict[str, SearchParam]:
        if info.data.get("search_algorithm") == "grid":
            for name, param in space.items():
                if param.type not in ("categorical", "int"):
                    raise ValueError(
                        f"grid search needs finite values, but parameter {name!r} is {param.type} "
                        "(use categorical or int)"
                    )
        return space

    @field_validator("search_algorithm")
    @classmethod
    def _check_sampler_installed(cls, name: str) -> str:
        needs = _SAMPLER_PACKAGES.get(name, ())
        missing = [p for p in needs if importlib.util.find_spec(p) is None]
        if missing:
            raise ValueError(
                f"search_algorithm {name!r} needs the package(s) {', '.join(missing)}, which are not installed "
                f"(pip install {' '.join(missing)})"
            )
        return name

    @model_validator(mode="after")
    def _check_devices(self) -> Self:
        if self.n_gpus > 0 and self.trainer.ddp_ranks > self.n_gpus:
            raise ValueError(
                f"trainer.ddp_ranks is {self.trainer.ddp_ranks} but n_gpus is {self.n_gpus}: "
                "a trial cannot take more GPUs than the run may use"
            )
        return self

    @model_validator(mode="after")
    def _check_external(self) -> Self:
        """In external mode the script's declared values type what the tuner may send it."""
        ext = self.external
        if ext is None:
            return self
        for name, param in self.search_space.items():
            if name not in ext.hparams:
                raise ValueError(f"search_space.{name}: not among external.hparams (give the script's value there)")
            default = ext.hparams[name]
            problem = _external_type_problem(param, default)
            if problem:
                raise ValueError(f"search_space.{name}: {problem}")
        for name in self.trainer.hparams:
            if name not in ext.hparams:
                raise ValueError(f"trainer.hparams.{name}: not among external.hparams")
        if ext.mlflow_tracking_uri is not None and self.n_gpus // self.trainer.ddp_ranks > 1:
            raise ValueError(
                "external.mlflow_tracking_uri: with several scripts at once (n_gpus / trainer.ddp_ranks > 1) the "
                "newest run of the experiment could be another segment's; read TensorBoard or the console instead"
            )
        return self
