"""The one schema for ``smart_tuner.yaml``, and the loader that validates it.

Called as ``loaded = load_config(path)``; ``loaded.raw`` is the config exactly as
written (``${NAME}`` templates intact) and is what the event log, the YAML
projection and ``config_hash`` see; ``loaded.resolved`` has the templates
expanded from the environment and lives in memory only, because it may hold
secrets (webhook URLs, CURVE keys).

The raw document is validated first, so an error message shows the template a
user wrote, never the secret it expands to. Every error is a ``ConfigError``
naming the file, the key path and the offending value.

Imports the standard library, pydantic and pyyaml only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULTS_SOURCE = "<defaults>"
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_TOKEN = re.compile(r"\$?" + ENV_REFERENCE.pattern)  # "$${X}" is an escaped, literal "${X}"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_GOT_CHARS = 60
_NOT_TYPE_ERRORS = ("value_error", "extra_forbidden")

SearchType = Literal["loguniform", "uniform", "int", "categorical"]
Choice = str | int | float | bool


class _Frozen(BaseModel):
    # strict: YAML already gives typed scalars, so "5", 5.0 and `yes` are mistakes, not ints
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


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


HparamValue = bool | int | float | str


class TrainerSection(_Frozen):
    """The trainer the tuner drives: the reference Tacotron2 worker, its data and its start."""

    preset: Literal["demo", "tiny", "nvidia"] = "demo"
    dataset: str = "demo"  # demo, tiny, an LJSpeech folder or an NVIDIA filelist
    data_dir: str | None = None  # where demo/tiny corpora and mel caches go (default: the user cache)
    threads: int | None = Field(default=None, ge=1)  # torch threads per worker (default: torch's choice)
    val_count: int = Field(default=16, ge=1)
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


class ForksConfig(_Frozen):
    """The ``forks`` strategy: rounds of candidates forked from the champion's checkpoint.

    A round starts every candidate from the champion's checkpoint for ``probe_steps``
    steps, keeps the best and drops the rest (successive halving, one rung); between
    rounds the champion trains on alone for ``exploit_steps``. The first round is the
    wide one (``first_round_candidates``), later ones are small (``candidates``).
    """

    warmup_steps: int = Field(default=30, ge=1)  # from scratch with the starting hparams: nothing is decided before
    first_round_candidates: int = Field(default=4, ge=1)
    candidates: int = Field(default=2, ge=1)
    probe_steps: int = Field(default=30, ge=1)
    exploit_steps: int = Field(default=150, ge=1)
    margin: float = Field(default=0.02, ge=0, lt=1)  # relative gain a challenger needs to replace the champion
    tie_margin: float = Field(default=0.03, ge=0, lt=1)  # challengers this close to the best tie: least change wins
    min_diagonality: float = Field(default=0.5, ge=0, le=1)  # the alignment a candidate needs to win
    ladder_factor: float = Field(default=3.0, gt=1)  # first round: the champion's log-scale values x this
    wide_factor: float = Field(default=10.0, gt=1)  # first round: ... and x this
    cooldown_at: float = Field(default=0.7, ge=0, le=1)  # share of the budget before which no lr decrease wins


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


# Placeholders an external command may use; {hparams}, {checkpoint} and {output_dir} are required.
EXTERNAL_PLACEHOLDERS = ("output_dir", "checkpoint", "hparams", "segment_id", "start_step", "run_dir")
_EXTERNAL_REQUIRED = ("output_dir", "checkpoint", "hparams")
# What NVIDIA's --hparams parser would split or misread inside a value.
_NVIDIA_UNSAFE = re.compile(r"[,=\[\]\s]")
ExternalValue = HparamValue | list[HparamValue]


def _placeholders(token: str) -> list[str]:
    import string

    try:
        return [name for _, name, _, _ in string.Formatter().parse(token) if name is not None]
    except ValueError as exc:
        raise ValueError(f"command token {token!r}: {exc} (write {{{{ and }}}} for literal braces)") from None


class ExternalConfig(_Frozen):
    """External mode: the user's own training script, tuned by restarts from its checkpoints.

    Each segment runs ``command`` (argv, never a shell) with the placeholders filled in:
    ``{output_dir}`` (a fresh folder per segment), ``{checkpoint}`` (the checkpoint to resume
    from; with none, the token and the option before it are left out), ``{hparams}`` (the
    hyperparameters in ``hparams_format``), ``{segment_id}``, ``{start_step}``, ``{run_dir}``.
    ``hparams`` are the script's own values for everything the tuner may set: every segment
    passes all of them (typed by these values, as NVIDIA's parser types by its defaults).
    """

    command: str | list[str]
    hparams_format: Literal["nvidia", "flags", "json", "yaml"] = "nvidia"
    flag_prefix: str = "--"  # hparams_format flags: --name value
    hparams: dict[str, ExternalValue]
    checkpoint_glob: str = "checkpoint_*"  # under {output_dir}
    checkpoint_step: str = r"(\d+)"  # regex searched in a checkpoint's file name; group 1 is its step
    preset: Literal["auto", "nvidia_tacotron2", "coqui", "espnet2", "vits", "indextts", "generic"] = "auto"
    stdout: bool = True  # read the script's console output with the preset's line rules
    tensorboard_dir: str | None = "logs"  # under {output_dir}; null: no TensorBoard source
    mlflow_tracking_uri: str | None = None  # a store the script logs to; its newest run per segment is read
    mlflow_experiment: str | None = None
    objective: str = "val_loss"  # the canonical metric compared when the script logs no val_objective
    # Your own names, before the preset's: "tag" (or an MLflow key) or "DIR:tag" -> a canonical name
    metrics: dict[str, str] = Field(default_factory=dict)
    # Console lines: regexes with a (?P<step>...) group and one group per canonical name
    stdout_patterns: list[str] = Field(default_factory=list)
    sigint_timeout_s: float = Field(default=30.0, gt=0)  # a segment ends with SIGINT, then SIGTERM ...
    sigterm_timeout_s: float = Field(default=10.0, gt=0)  # ... then SIGKILL after these timeouts
    checkpoint_timeout_s: float = Field(default=600.0, gt=0)  # past the last step, wait this long for its checkpoint
    hang_timeout_s: float = Field(default=900.0, gt=0)  # no new step for this long: the segment fails
    cwd: str | None = None  # the script's working directory (default: where run_tuner.py was started)
    env: dict[str, str] = Field(default_factory=dict)  # extra environment for the script

    def argv(self) -> list[str]:
        import shlex

        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)

    @field_validator("command")
    @classmethod
    def _check_command(cls, command: str | list[str]) -> str | list[str]:
        import shlex

        try:
            argv = shlex.split(command) if isinstance(command, str) else list(command)
        except ValueError as exc:
            raise ValueError(f"command does not split into arguments: {exc}") from None
        if not argv:
            raise ValueError("command is empty")
        names = [n for token in argv for n in _placeholders(token)]
        unknown = sorted({n for n in names if n not in EXTERNAL_PLACEHOLDERS})
        if unknown:
            raise ValueError(f"unknown placeholder {{{unknown[0]}}} (known: {', '.join(EXTERNAL_PLACEHOLDERS)})")
        missing = [n for n in _EXTERNAL_REQUIRED if n not in names]
        if missing:
            raise ValueError(f"command needs {{{missing[0]}}}: the tuner cannot {_NEEDS[missing[0]]} without it")
        return command

    @field_validator("hparams")
    @classmethod
    def _check_hparams(cls, hparams: dict[str, ExternalValue]) -> dict[str, ExternalValue]:
        if not hparams:
            raise ValueError("name the script's hyperparameters with their values (at least the ones to tune)")
        for name in hparams:
            if not _IDENTIFIER.match(name):
                raise ValueError(f"hyperparameter name {name!r} is not an identifier")
        return hparams

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, metrics: dict[str, str]) -> dict[str, str]:
        for key, name in metrics.items():
            if not key or key.endswith(":"):
                raise ValueError(f"{key!r}: name a tag, or DIR:tag")
            if not _IDENTIFIER.match(name):
                raise ValueError(f"{key!r}: the canonical name {name!r} is not an identifier (e.g. val_loss)")
        return metrics

    @field_validator("stdout_patterns")
    @classmethod
    def _check_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
            groups = set(compiled.groupindex)
            if "step" not in groups or len(groups) < 2:
                raise ValueError(f"{pattern!r} needs a (?P<step>...) group and one named after a canonical metric, "
                                 "e.g. (?P<train_loss>...)")  # fmt: skip
        return patterns

    @field_validator("checkpoint_step")
    @classmethod
    def _check_step_regex(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if compiled.groups < 1:
            raise ValueError("needs a group for the step, e.g. 'checkpoint_(\\d+)'")
        return pattern

    @model_validator(mode="after")
    def _check_format(self) -> Self:
        if self.hparams_format == "flags" and "{hparams}" not in self.argv():
            raise ValueError(
                "with hparams_format flags, {hparams} must be an argument of its own (it stands for several)"
            )
        if self.hparams_format == "nvidia":
            for name, value in self.hparams.items():
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, str) and (not v or _NVIDIA_UNSAFE.search(v)):
                        raise ValueError(
                            f"hparams.{name}: {v!r} cannot be written in NVIDIA's --hparams format "
                            "(no commas, '=', brackets, spaces or empty strings)"
                        )
        if (self.mlflow_tracking_uri is None) != (self.mlflow_experiment is None):
            raise ValueError("mlflow_tracking_uri and mlflow_experiment go together")
        return self


_NEEDS = {
    "output_dir": "find the checkpoints and logs of a segment",
    "checkpoint": "resume a segment from the champion's checkpoint",
    "hparams": "hand the script new hyperparameters",
}


def _default_search_space() -> dict[str, SearchParam]:
    return {
        "learning_rate": SearchParam(type="loguniform", low=1e-4, high=3e-2),
        "p_encoder_dropout": SearchParam(type="uniform", low=0.0, high=0.5),
        "p_postnet_dropout": SearchParam(type="uniform", low=0.0, high=0.5),
        "p_attention_dropout": SearchParam(type="uniform", low=0.0, high=0.3),
        "p_decoder_dropout": SearchParam(type="uniform", low=0.0, high=0.3),
        "adam_beta2": SearchParam(type="categorical", choices=[0.98, 0.999]),
    }


class TunerConfig(_Frozen):
    """The whole of ``smart_tuner.yaml``."""

    seed: int = Field(default=0, ge=0)
    strategy: Literal["forks", "pbt", "trials", "none"] = "forks"
    search_algorithm: Literal["tpe", "cmaes", "gp", "random", "grid"] = "tpe"
    n_startup_trials: int = Field(default=4, ge=0)
    n_trials: int = Field(default=20, ge=1)
    resume_from_checkpoint: str | None = None
    search_space: dict[str, SearchParam] = Field(default_factory=_default_search_space)
    n_gpus: int = Field(default=0, ge=0)  # 0: CPU only
    budget: Budget = Field(default_factory=Budget)
    stop: StopRules = Field(default_factory=StopRules)
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

    @model_validator(mode="after")
    def _check_devices(self) -> Self:
        if self.n_gpus > 0 and self.trainer.ddp_ranks > self.n_gpus:
            raise ValueError(f"trainer.ddp_ranks is {self.trainer.ddp_ranks} but n_gpus is {self.n_gpus}: "
                             "a trial cannot take more GPUs than the run may use")  # fmt: skip
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


def _external_type_problem(param: SearchParam, default: ExternalValue) -> str | None:
    kind = "a list" if isinstance(default, list) else type(default).__name__
    if isinstance(default, list):
        return f"the script's value is {kind}, which cannot be tuned"
    if param.type in ("loguniform", "uniform") and (isinstance(default, bool) or not isinstance(default, float)):
        return f"{param.type} gives floats, but the script's value {default!r} is {kind}"
    if param.type == "int" and (isinstance(default, bool) or not isinstance(default, int)):
        return f"int gives integers, but the script's value {default!r} is {kind}"
    if param.type == "categorical":
        for choice in param.choices or ():
            if type(choice) is not type(default) and not (isinstance(default, float) and type(choice) is int):
                return f"choice {choice!r} is {type(choice).__name__}, but the script's value {default!r} is {kind}"
    return None


class ConfigError(ValueError):
    """An invalid config; the message names the file, the key path and the value."""


# --- recording ---------------------------------------------------------------


def to_recordable(cfg: TunerConfig) -> dict[str, Any]:
    """JSON-ready dump of a *raw* config: SecretStr fields show the template text as written.

    Pass ``LoadedConfig.raw`` only: a resolved config would dump its secrets here.
    """
    data = cfg.model_dump(mode="json")
    data["alerts"]["urls"] = [url.get_secret_value() for url in cfg.alerts.urls]
    if cfg.optuna_storage is not None:
        data["optuna_storage"] = cfg.optuna_storage.get_secret_value()
    return data


def hash_config(cfg: TunerConfig) -> str:
    """sha256 hex of the canonical JSON of the recordable form; independent of the environment."""
    canonical = json.dumps(to_recordable(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def dump_config(cfg: TunerConfig) -> str:
    """YAML text of the recordable form (pass a raw config; see ``to_recordable``)."""
    return yaml.safe_dump(to_recordable(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    raw: TunerConfig  # templates intact: record this one
    resolved: TunerConfig = field(repr=False)  # secrets expanded: memory only
    source: str
    config_hash: str

    def recordable(self) -> dict[str, Any]:
        return to_recordable(self.raw)


# --- loading -----------------------------------------------------------------


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads ``1e-4`` as a float (as YAML 1.2 does)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: list[object] = []
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # keys brought in by `<<:` may be overridden
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.append(key)
    return loader.construct_mapping(node, deep=True)


_ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_document(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc}") from None
    try:
        document = yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: as safe as safe_load
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        raise ConfigError(f"{source}: YAML error at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: YAML error: {exc}") from None
    if document is None:  # an empty file means all defaults
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(document).__name__}")
    return document


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _truncate(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_GOT_CHARS else text[: _MAX_GOT_CHARS - 3] + "..."


def _lookup(document: object, loc: tuple[int | str, ...]) -> tuple[bool, object]:
    node: Any = document
    for part in loc:
        try:
            node = node[part]  # a dict key or a list index
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, node


def _format_errors(
    exc: ValidationError, source: str, *, raw_document: object = None, secrets: Mapping[str, str] | None = None
) -> str:
    """One line per error. With ``secrets`` (value -> variable name), the values shown come from
    ``raw_document`` and every expanded value in a message is put back as its ``${NAME}``."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        msg = error["msg"].removeprefix("Value error, ")
        found, got = (True, error["input"]) if secrets is None else _lookup(raw_document, loc)
        if secrets is not None:
            for value in sorted(secrets, key=len, reverse=True):
                msg = msg.replace(value, "${" + secrets[value] + "}")
        if isinstance(got, str) and ENV_REFERENCE.search(got) and error["type"] not in _NOT_TYPE_ERRORS:
            msg += "; ${NAME} templates work in free-text string fields only"
        lines.append(f"{source}: {_format_loc(loc)}: {msg}" + (f" (got {_truncate(got)})" if found else ""))
    return "\n".join(lines)


def _expand(
    value: object, environ: Mapping[str, str], source: str, loc: tuple[int | str, ...], used: dict[str, str]
) -> object:
    """A copy of ``value`` with ``${NAME}`` expanded in every string; ``used`` collects value -> NAME."""
    if isinstance(value, dict):
        return {key: _expand(item, environ, source, (*loc, key), used) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, environ, source, (*loc, i), used) for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if match.group(0).startswith("$$"):
            return "${" + name + "}"
        if name not in environ:
            raise ConfigError(f"{source}: {_format_loc(loc)}: environment variable {name} is not set")
        if environ[name]:
            used[environ[name]] = name
        return environ[name]

    return _ENV_TOKEN.sub(substitute, value)


def _validate(
    document: object, source: str, *, raw_document: object = None, secrets: Mapping[str, str] | None = None
) -> TunerConfig:
    try:
        return TunerConfig.model_validate(document)
    except ValidationError as exc:
        message = _format_errors(exc, source, raw_document=raw_document, secrets=secrets)
    # raised outside the handler: no __context__ may keep the ValidationError, which holds the expanded values
    raise ConfigError(message)


def load_config(path: Path | None, *, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, validate and expand a config file; ``path=None`` gives the embedded defaults.

    Raises ConfigError for an unreadable file, bad YAML, an invalid value or an unset variable.
    """
    environ = os.environ if environ is None else environ
    source = DEFAULTS_SOURCE if path is None else str(path)
    document = {} if path is None else _read_document(path)
    raw = _validate(document, source)  # first: its errors show the templates as written
    used: dict[str, str] = {}
    expanded = _expand(document, environ, source, (), used)
    resolved = _validate(expanded, source, raw_document=document, secrets=used)
    return LoadedConfig(raw=raw, resolved=resolved, source=source, config_hash=hash_config(raw))


# ``run --quick``: the embedded demo cut to a few minutes on two cores (a look, not a result).
QUICK = {
    "budget": {"max_steps": 100},
    "forks": {"warmup_steps": 20, "first_round_candidates": 3, "probe_steps": 15, "exploit_steps": 30},
}


def with_overrides(loaded: LoadedConfig, overrides: Mapping[str, Mapping[str, Any]]) -> LoadedConfig:
    """``loaded`` with whole sections' keys replaced (validated again, hashed again)."""

    def apply(cfg: TunerConfig) -> TunerConfig:
        changes = {}
        for section, values in overrides.items():
            current = getattr(cfg, section)
            changes[section] = type(current).model_validate({**current.model_dump(), **values})
        return cfg.model_copy(update=changes)

    raw = apply(loaded.raw)
    return LoadedConfig(raw=raw, resolved=apply(loaded.resolved), source=loaded.source + " (--quick)",
                        config_hash=hash_config(raw))  # fmt: skip
