"""Per-field type checkers compiled once from a message class's annotations.

``compile_checker(annotation, limits)`` returns a function ``check(value, path)``
that returns the (possibly normalised) value or raises ``ProtocolError`` naming
``path``. Supported annotations: ``int``, ``float``, ``str``, ``bool``, ``None``,
unions (``X | None``), ``Literal[...]``, ``tuple[X, ...]``, ``Mapping[str, X]``
and ``Json`` (any nesting of the above scalars, tuples and string-keyed maps).

Imports the standard library only.
"""

from __future__ import annotations

import collections.abc
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from .errors import ProtocolError

Checker = Callable[[Any, str], Any]

# A JSON-like value: scalars, tuples and string-keyed maps, nested. Declared as
# ``Any`` for the type checker; the codec validates the shape at the edge.
Json = Any
JSON_MARKER = "Json"


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits applied to every decoded message (see protocol.codec)."""

    max_message_bytes: int = 1 << 20  # 1 MiB: telemetry and decisions are small; images go to files
    max_str_len: int = 64 * 1024
    max_bin_len: int = 0  # no binary payloads on the bus
    max_array_len: int = 65_536
    max_map_len: int = 4_096
    max_depth: int = 16  # nesting depth of Json values


def describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _fail(path: str, expected: str, value: Any) -> ProtocolError:
    return ProtocolError(f"{path}: expected {expected}, got {describe(value)}")


def _check_int(value: Any, path: str) -> int:
    if type(value) is int:
        return value
    raise _fail(path, "int", value)


def _check_float(value: Any, path: str) -> float:
    t = type(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is int:
        return float(value)
    raise _fail(path, "float", value)


def _check_str(value: Any, path: str) -> str:
    if type(value) is str:
        return value
    raise _fail(path, "str", value)


def _check_bool(value: Any, path: str) -> bool:
    if type(value) is bool:
        return value
    raise _fail(path, "bool", value)


def _check_none(value: Any, path: str) -> None:
    if value is None:
        return None
    raise _fail(path, "None", value)


def make_json_checker(limits: Limits) -> Checker:
    """A checker for arbitrary JSON-like values with bounded depth."""

    def check(value: Any, path: str, depth: int = 0) -> Any:
        if depth > limits.max_depth:
            raise ProtocolError(f"{path}: nested deeper than {limits.max_depth} levels")
        t = type(value)
        if value is None or t is bool or t is int or t is str:
            return value
        if t is float:
            return value
        if t is tuple or t is list:
            return tuple(check(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
        if t is dict:
            out = {}
            for k, v in value.items():
                if type(k) is not str:
                    raise ProtocolError(f"{path}: map keys must be str, got {describe(k)}")
                out[k] = check(v, f"{path}.{k}", depth + 1)
            return out
        raise _fail(path, "a JSON-like value", value)

    return check


_SCALARS: dict[Any, Checker] = {
    int: _check_int,
    float: _check_float,
    str: _check_str,
    bool: _check_bool,
    type(None): _check_none,
}


def compile_checker(annotation: Any, limits: Limits) -> Checker:
    """Compile ``annotation`` into a checker; raises TypeError for unsupported hints."""
    if annotation is Any:
        return make_json_checker(limits)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        allowed = frozenset(args)
        shown = " | ".join(repr(a) for a in args)

        def check_literal(value: Any, path: str) -> Any:
            if type(value) in (str, int, bool) and value in allowed:
                return value
            raise _fail(path, f"one of {shown}", value)

        return check_literal
    if origin in (Union, types.UnionType):
        checkers = [compile_checker(a, limits) for a in args]
        names = " | ".join(getattr(a, "__name__", repr(a)) for a in args)

        def check_union(value: Any, path: str) -> Any:
            for c in checkers:
                try:
                    return c(value, path)
                except ProtocolError:
                    continue
            raise _fail(path, names, value)

        return check_union
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = compile_checker(args[0], limits)

        def check_tuple(value: Any, path: str) -> tuple[Any, ...]:
            if type(value) not in (tuple, list):
                raise _fail(path, "array", value)
            return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

        return check_tuple
    if origin in (collections.abc.Mapping, dict, Mapping) and args and args[0] is str:
        val = compile_checker(args[1], limits)

        def check_map(value: Any, path: str) -> dict[str, Any]:
            if type(value) is not dict:
                raise _fail(path, "map", value)
            out = {}
            for k, v in value.items():
                if type(k) is not str:
                    raise ProtocolError(f"{path}: map keys must be str, got {describe(k)}")
                out[k] = val(v, f"{path}.{k}")
            return out

        return check_map
    raise TypeError(f"unsupported annotation in a message schema: {annotation!r}")


def finite(value: float) -> bool:
    """True for a float that is neither NaN nor infinite."""
    return math.isfinite(value)
