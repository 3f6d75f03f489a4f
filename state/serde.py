"""State <-> plain data (dicts, lists, scalars), for YAML and snapshots.

``to_plain`` keeps field and insertion order, so the same state always gives
the same document. ``from_plain`` rebuilds the frozen dataclasses from the
type hints and turns lists back into tuples, so a state read from a snapshot
compares equal to the state it was written from.

Imports the standard library only.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")

# Field metadata for a field added after a state shape was recorded: written (YAML, snapshots) only
# when it differs from its default, so the projection of a log older than the field stays byte for
# byte what it was (``replay --verify`` passes on it); a document without it reads as the default.
_WHEN_SET = "written_when_set"
WRITTEN_WHEN_SET: Mapping[str, bool] = {_WHEN_SET: True}


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (f.metadata.get(_WHEN_SET) and getattr(value, f.name) == _default_of(f))
        }
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    """Json values: lists become tuples, as in events decoded from the wire."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_plain(cls: type[T], data: Any) -> T:
    """Rebuild an instance of ``cls`` (a dataclass) from ``to_plain`` output."""
    return _build(cls, data, cls.__name__)  # type: ignore[no-any-return]


def _build(hint: Any, data: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a map for {hint.__name__}, got {type(data).__name__}")
        hints = _hints(hint)
        kwargs = {}
        for f in dataclasses.fields(hint):
            if f.name in data:
                kwargs[f.name] = _build(hints[f.name], data[f.name], f"{path}.{f.name}")
        unknown = set(data) - {f.name for f in dataclasses.fields(hint)}
        if unknown:
            raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}")
        return hint(**kwargs)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if data is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], data, path) if len(inner) == 1 else _freeze(data)
    if origin is tuple:
        return tuple(_build(args[0], v, f"{path}[{i}]") for i, v in enumerate(data))
    if origin in (Mapping, dict, typing.Mapping) or (origin is not None and origin.__name__ == "Mapping"):
        return {k: _build(args[1], v, f"{path}.{k}") for k, v in data.items()}
    if origin is Literal or hint in (int, str, bool):
        return data
    if hint is float:
        return float(data) if isinstance(data, int) and not isinstance(data, bool) else data
    return _freeze(data)  # Json (Any)
