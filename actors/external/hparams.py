"""The hyperparameters as the user's script takes them: typed by its declared values, rendered.

``merged_hparams(declared, changes)``: every declared value, the segment's over it, each in
the type of the declared one (``typed``). ``render_hparams(values, fmt)``: the argv tokens
``{hparams}`` stands for: NVIDIA's ``--hparams`` string, separate flags, or the path of a
JSON/YAML file it writes. ``ExternalError``: a value the script or its format cannot take.

Imports the standard library and PyYAML only: nothing of the worker protocol, the script's
process or the log sources, and never torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ExternalError(ValueError):
    """The segment cannot be handed to the script as asked (a value its format cannot carry)."""


def typed(name: str, value: Any, declared: Any) -> Any:
    """``value`` in the type of the script's declared value (NVIDIA: the default's type decides)."""
    if isinstance(declared, bool):
        if not isinstance(value, bool):
            raise ExternalError(f"{name}: the script takes true/false, not {value!r}")
        return value
    if isinstance(declared, int):
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ExternalError(f"{name}: the script takes an integer, not {value!r}")
        return int(value)
    if isinstance(declared, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ExternalError(f"{name}: the script takes a finite number, not {value!r}")
        return float(value)
    if isinstance(declared, list):
        if not isinstance(value, list | tuple):
            raise ExternalError(f"{name}: the script takes a list, not {value!r}")
        return list(value)
    if not isinstance(value, str):
        raise ExternalError(f"{name}: the script takes a string, not {value!r}")
    return value


def _nvidia_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_nvidia_value(name, v) for v in value) + "]"
    if not value or re.search(r"[,=\[\]\s]", value):
        raise ExternalError(f"{name}: {value!r} cannot be written in NVIDIA's --hparams format")
    return str(value)


def merged_hparams(declared: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared hyperparameter, the segment's values over the declared ones, typed."""
    unknown = sorted(set(changes) - set(declared))
    if unknown:
        raise ExternalError(f"{unknown[0]}: the script declares no such hyperparameter (external.hparams)")
    return {name: typed(name, changes.get(name, value), value) for name, value in declared.items()}


def render_hparams(values: Mapping[str, Any], fmt: str, prefix: str = "--", file: Path | None = None) -> list[str]:
    """The argv tokens ``{hparams}`` stands for: one NVIDIA string, flag pairs, or a file's path."""
    if fmt == "nvidia":
        return [",".join(f"{k}={_nvidia_value(k, v)}" for k, v in values.items())]
    if fmt == "flags":
        out = []
        for k, v in values.items():
            out += [f"{prefix}{k}", _nvidia_value(k, v) if isinstance(v, bool | list) else str(v)]
        return out
    if file is None:
        raise ExternalError(f"hparams_format {fmt} writes a file: give its path")
    text = json.dumps(dict(values), indent=2) if fmt == "json" else yaml.safe_dump(dict(values), sort_keys=False)
    file.write_text(text)
    return [str(file)]
