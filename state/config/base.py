"""The base every config model shares: ``_Frozen``, the identifier rule and the hparam value type.

Here so that ``schema`` and ``external`` can both build on it without importing each other
at run time. Imports the standard library and pydantic only.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Frozen(BaseModel):
    # strict: YAML already gives typed scalars, so "5", 5.0 and `yes` are mistakes, not ints
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


HparamValue = bool | int | float | str
