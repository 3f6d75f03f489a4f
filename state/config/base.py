"""The base every config model shares: ``_Frozen``, the identifier rule and the hparam value type.

Here so that ``schema`` and ``external`` can both build on it without importing each other
at run time. Imports the standard library and pydantic only.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, JsonValue

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Frozen(BaseModel):
    # strict: YAML already gives typed scalars, so "5", 5.0 and `yes` are mistakes, not ints
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


HparamValue = bool | int | float | str

# ``json_schema_extra`` of a setting added after runs were recorded without it: the config hash
# leaves it out while it is at its default, so the hash of an older run's recorded config (which
# reads as the default) stays what was recorded and ``--resume`` still accepts it.
HASHED_WHEN_SET: dict[str, JsonValue] = {"hashed_when_set": True}


def drop_unset_late_settings(model: BaseModel, dumped: dict[str, object]) -> dict[str, object]:
    """``dumped`` (``model``'s JSON dump) without the ``HASHED_WHEN_SET`` settings at their default."""
    out = dict(dumped)
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        extra = info.json_schema_extra
        default = info.get_default(call_default_factory=True)
        if isinstance(extra, dict) and extra.get("hashed_when_set") and value == default:
            out.pop(name, None)
        elif isinstance(value, BaseModel) and isinstance(out.get(name), dict):
            out[name] = drop_unset_late_settings(value, out[name])  # type: ignore[arg-type]
    return out
