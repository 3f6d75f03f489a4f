"""Hypothesis strategies and helpers shared by the unit tests of ``protocol`` and ``state``.

``for_hint(annotation)`` builds values for one message field from its type hint
(the same annotations ``protocol.schema`` compiles), ``messages(spec)`` and
``envelopes(spec)`` build whole messages, ``same(a, b)`` compares decoded values
strictly (types too) with NaN equal to NaN, and ``committed(...)`` wraps
messages into envelopes with a gapless ``seq`` for the reducers.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union

from hypothesis import strategies as st

from smart_tuner.protocol import Envelope, Message, MessageSpec

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1  # msgpack's integer range: the codec refuses anything wider

ints = st.integers(INT64_MIN, UINT64_MAX)
floats = st.floats()  # NaN and +-inf included: metrics can be NaN and the codec must carry them
texts = st.text(max_size=12)
keys = st.text(max_size=6)

json_scalars = st.none() | st.booleans() | ints | floats | texts
# Decoded Json arrays are tuples, so the strategy makes tuples and round trips compare equal.
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)


def for_hint(hint: Any) -> st.SearchStrategy[Any]:
    """Values valid for a message field annotated ``hint``; raises TypeError for an unknown hint."""
    if hint is Any:
        return json_values
    scalars: dict[Any, st.SearchStrategy[Any]] = {
        int: ints,
        float: floats,
        str: texts,
        bool: st.booleans(),
        type(None): st.none(),
    }
    if hint in scalars:
        return scalars[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (Union, types.UnionType):
        return st.one_of([for_hint(a) for a in args])
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(for_hint(args[0]), max_size=4).map(tuple)
    if origin in (Mapping, dict) and args and args[0] is str:
        return st.dictionaries(keys, for_hint(args[1]), max_size=4)
    raise TypeError(f"no strategy for {hint!r}: teach tests/unit/strategies.py the new annotation")


def messages(spec: MessageSpec) -> st.SearchStrategy[Message]:
    hints = typing.get_type_hints(spec.cls)
    fields = {name: for_hint(hints[name]) for name in spec.fields}
    return st.fixed_dictionaries(fields).map(lambda kw: spec.cls(**kw))


def envelopes(spec: MessageSpec) -> st.SearchStrategy[Envelope]:
    """Valid envelopes around ``spec``'s messages, within the codec's envelope limits."""
    opt_id = st.none() | st.text(max_size=64)
    return st.builds(
        Envelope,
        seq=st.integers(0, UINT64_MAX),
        id=st.text(min_size=1, max_size=64),
        ts=st.floats(allow_nan=False, allow_infinity=False),
        type=st.just(spec.cls.TYPE),
        tv=st.just(spec.tv),
        actor=st.text(max_size=128),
        corr=opt_id,
        cause=opt_id,
        data=messages(spec),
    )


def same(a: Any, b: Any) -> bool:
    """Deep equality that also requires equal types, with NaN == NaN and -0.0 != 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return bool(a == b)


def envelope(seq: int, data: Message, *, ts: float | None = None, actor: str = "test") -> Envelope:
    """A committed envelope with a deterministic id (``ts`` defaults to ``1000 + seq``)."""
    return Envelope(
        seq=seq,
        id=f"evt-{seq:08d}",
        ts=1000.0 + seq if ts is None else ts,
        type=data.TYPE,
        tv=data.TV,
        actor=actor,
        corr=None,
        cause=None,
        data=data,
    )


def committed(items: Iterable[Message], first_seq: int = 1) -> list[Envelope]:
    """``items`` as envelopes with seq ``first_seq``, ``first_seq + 1``, ..."""
    return [envelope(seq, data) for seq, data in enumerate(items, start=first_seq)]
