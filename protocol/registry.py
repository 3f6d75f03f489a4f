"""The message registry: type tags, versions, schemas and upcasters.

Adding a message type is one decorated class::

    @event(tv=1)
    class SegmentFinished:
        segment_id: str
        ...

``@event`` and ``@command`` turn the class into a frozen, slotted, keyword-only
dataclass, give it ``TYPE`` (its class name, the wire tag), ``TV`` (its current
type version) and ``KIND``, and register its compiled schema. A later version
registers an upcaster from the older ``tv``::

    @upcaster("SegmentFinished", from_tv=1)
    def _sf_v1_to_v2(data): return {**data, "duration_s": 0.0}

Imports the standard library only.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar, dataclass_transform

from .errors import ProtocolError
from .schema import Checker, Limits, compile_checker

Kind = Literal["event", "command", "signal"]
T = TypeVar("T")
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Message:
    """Base of every message class (gives the type checker the class attributes)."""

    __slots__ = ()
    TYPE: ClassVar[str]
    TV: ClassVar[int]
    KIND: ClassVar[Kind]
    DECISION: ClassVar[bool]


@dataclasses.dataclass(frozen=True, slots=True)
class MessageSpec:
    cls: type[Message]
    kind: Kind
    tv: int
    decision: bool
    fields: tuple[str, ...]
    required: frozenset[str]
    checkers: tuple[tuple[str, Checker], ...]


_SPECS: dict[str, MessageSpec] = {}
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
_LIMITS = Limits()


def _register(cls: type[Any], kind: Kind, tv: int, decision: bool) -> type[Any]:
    name = cls.__name__
    if name in _SPECS:
        raise TypeError(f"message type {name!r} is registered twice")
    dc = dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)
    hints = typing.get_type_hints(dc)
    fields = dataclasses.fields(dc)
    checkers = tuple((f.name, compile_checker(hints[f.name], _LIMITS)) for f in fields)
    required = frozenset(
        f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    dc.TYPE = name
    dc.TV = tv
    dc.KIND = kind
    dc.DECISION = decision
    _SPECS[name] = MessageSpec(dc, kind, tv, decision, tuple(f.name for f in fields), required, checkers)
    return dc


@dataclass_transform(frozen_default=True, kw_only_default=True)
def event(*, tv: int = 1, decision: bool = False) -> Callable[[type[T]], type[T]]:
    """Register a past-tense fact. ``decision=True`` marks events that must carry reason and evidence."""

    def wrap(cls: type[T]) -> type[T]:
        if decision:
            hints = typing.get_type_hints(cls)
            missing = {"reason", "evidence"} - set(hints)
            if missing:
                raise TypeError(f"decision event {cls.__name__} lacks {sorted(missing)}")
        return _register(cls, "event", tv, decision)

    return wrap


@dataclass_transform(frozen_default=True, kw_only_default=True)
def command(*, tv: int = 1) -> Callable[[type[T]], type[T]]:
    """Register an imperative command (sent to workers, never journaled)."""

    def wrap(cls: type[T]) -> type[T]:
        return _register(cls, "command", tv, False)

    return wrap


@dataclass_transform(frozen_default=True, kw_only_default=True)
def signal(*, tv: int = 1) -> Callable[[type[T]], type[T]]:
    """Register a signal: a live fact about a connection (a heartbeat), neither an order nor journaled."""

    def wrap(cls: type[T]) -> type[T]:
        return _register(cls, "signal", tv, False)

    return wrap


def upcaster(type_name: str, *, from_tv: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns ``data`` of version ``from_tv`` into ``from_tv + 1``."""

    def wrap(fn: Upcaster) -> Upcaster:
        key = (type_name, from_tv)
        if key in _UPCASTERS:
            raise TypeError(f"upcaster for {type_name} v{from_tv} is registered twice")
        _UPCASTERS[key] = fn
        return fn

    return wrap


def spec_for(type_name: str) -> MessageSpec:
    try:
        return _SPECS[type_name]
    except KeyError:
        raise ProtocolError(f"unknown message type {type_name!r}") from None


def all_specs() -> tuple[MessageSpec, ...]:
    return tuple(_SPECS.values())


def upcast(type_name: str, tv: int, data: dict[str, Any]) -> dict[str, Any]:
    """Bring ``data`` written at version ``tv`` up to the current version."""
    spec = spec_for(type_name)
    if tv > spec.tv:
        raise ProtocolError(
            f"{type_name}: type version {tv} is newer than this build understands ({spec.tv}); upgrade smart-tuner"
        )
    if tv < 1:
        raise ProtocolError(f"{type_name}: type version must be >= 1, got {tv}")
    while tv < spec.tv:
        fn = _UPCASTERS.get((type_name, tv))
        if fn is None:
            raise ProtocolError(f"{type_name}: no upcaster from type version {tv}")
        data = fn(data)
        tv += 1
    return data


def build(type_name: str, data: Any, *, validate: bool = True) -> Message:
    """Construct the message ``type_name`` from decoded ``data`` (already upcast)."""
    spec = spec_for(type_name)
    if type(data) is not dict:
        raise ProtocolError(f"{type_name}.data: expected map, got {type(data).__name__}")
    if validate:
        unknown = data.keys() - set(spec.fields)
        if unknown:
            raise ProtocolError(f"{type_name}: unknown field(s) {sorted(unknown, key=str)}")  # keys may be bytes
        missing = spec.required - data.keys()
        if missing:
            raise ProtocolError(f"{type_name}: missing field(s) {sorted(missing)}")
        clean = {}
        for name, check in spec.checkers:
            if name in data:
                clean[name] = check(data[name], f"{type_name}.{name}")
        data = clean
    try:
        return spec.cls(**data)
    except TypeError as exc:  # only reachable with validate=False
        raise ProtocolError(f"{type_name}: {exc}") from None


def build_current(type_name: Any, tv: Any, data: Any) -> Message | None:
    """The replay fast path: build a message of the current type version without checks, or None.

    None means "take the slow path" (unknown type, older version, not a map, wrong fields).
    """
    spec = _SPECS.get(type_name) if type(type_name) is str else None
    if spec is None or tv != spec.tv or type(data) is not dict:
        return None
    try:
        return spec.cls(**data)
    except TypeError:
        return None


def to_data(message: Message) -> dict[str, Any]:
    """The message's fields as a plain dict (shallow)."""
    spec = _SPECS[message.TYPE]
    return {name: getattr(message, name) for name in spec.fields}
