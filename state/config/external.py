"""The ``external:`` section: ``ExternalConfig``, its command placeholders and validators, and
the check that a search parameter fits the type of the script's own value.

Imports the standard library, pydantic and ``base`` (``schema`` for type checking only: it
imports this module).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, field_validator, model_validator

from .base import _IDENTIFIER, HparamValue, _Frozen

if TYPE_CHECKING:
    from .schema import SearchParam

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
    # The script's own name for a hyperparameter, where it is not ours: the tuner, its search space and
    # its rules (the lower-rate rule, the NaN rollback's halving) keep ours; the script is given its own.
    # e.g. {learning_rate: lr} for Coqui's --coqpit.lr (flag_prefix "--coqpit.")
    names: dict[str, str] = Field(default_factory=dict)
    checkpoint_glob: str = "checkpoint_*"  # under {output_dir}
    checkpoint_step: str = r"(\d+)"  # regex searched in a checkpoint's file name; group 1 is its step
    preset: Literal["auto", "nvidia_tacotron2", "coqui", "espnet2", "vits", "indextts", "generic"] = "auto"
    stdout: bool = True  # read the script's console output with the preset's line rules
    tensorboard_dir: str | None = "logs"  # under {output_dir}; null: no TensorBoard source
    mlflow_tracking_uri: str | None = None  # a store the script logs to; its newest run per segment is read
    mlflow_experiment: str | None = None
    # the canonical metric compared when the script logs no val_objective (null: the preset's, the
    # unweighted mel loss where the trainer logs one, e.g. coqui's val_mel_post_loss; else val_loss)
    objective: str | None = None
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

    @model_validator(mode="after")
    def _check_names(self) -> Self:
        for ours, theirs in self.names.items():
            if ours not in self.hparams:
                raise ValueError(f"names.{ours}: not one of hparams ({', '.join(self.hparams)})")
            if not _SCRIPT_NAME.match(theirs):
                raise ValueError(f"names.{ours}: {theirs!r} is not a name a script takes (letters, digits, _ and .)")
        taken = [self.names.get(name, name) for name in self.hparams]
        doubled = sorted({n for n in taken if taken.count(n) > 1})
        if doubled:
            raise ValueError(f"names: two hyperparameters would reach the script as {doubled[0]!r}")
        return self

    def script_name(self, name: str) -> str:
        return self.names.get(name, name)

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
                raise ValueError(
                    f"{pattern!r} needs a (?P<step>...) group and one named after a canonical metric, "
                    "e.g. (?P<train_loss>...)"
                )
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


_SCRIPT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_NEEDS = {
    "output_dir": "find the checkpoints and logs of a segment",
    "checkpoint": "resume a segment from the champion's checkpoint",
    "hparams": "hand the script new hyperparameters",
}


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
