"""msgpack codec for envelopes, with hard limits and per-type schema validation.

Wire form: a msgpack array ``[v, seq, id, ts, type, tv, actor, corr, cause, data]``
where ``data`` is a map of the message's fields. An array keeps the hot path
(replaying millions of metric events) cheap; ``v`` versions the envelope itself
and ``tv`` each message type, upcast on read.

``decode`` raises ``ProtocolError`` for any bad input: truncated, oversized,
not msgpack, ext types, non-string map keys, wrong top-level shape, wrong
field types, unknown type tags, unsupported versions.

Imports the standard library, msgpack and this package only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack

from .envelope import ENVELOPE_VERSION, Envelope
from .errors import ProtocolError
from .registry import Message, build, build_current, to_data, upcast
from .schema import Limits, describe

DEFAULT_LIMITS = Limits()
ENVELOPE_LEN = 10
_MAX_ID_LEN = 64
_MAX_NAME_LEN = 128


def _default(value: Any) -> Any:
    """msgpack packs dicts, lists and tuples itself; other mappings become dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def encode(env: Envelope, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Serialise ``env``; raises ProtocolError if it is not encodable or too large."""
    frame = [env.v, env.seq, env.id, env.ts, env.type, env.tv, env.actor, env.corr, env.cause, to_data(env.data)]
    try:
        payload: bytes = msgpack.packb(frame, use_bin_type=True, default=_default)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"{env.type}: cannot encode: {exc}") from None
    if len(payload) > limits.max_message_bytes:
        raise ProtocolError(
            f"{env.type}: encoded size {len(payload)} bytes exceeds the limit of {limits.max_message_bytes}"
        )
    return payload


def unpack(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """msgpack-decode ``payload`` under ``limits`` (no schema check)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected bytes, got {type(payload).__name__}")
    if len(payload) > limits.max_message_bytes:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the limit of {limits.max_message_bytes}")
    if len(payload) == 0:
        raise ProtocolError("empty message")
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            use_list=False,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
        )
    except (ValueError, msgpack.UnpackException, TypeError, RecursionError) as exc:
        raise ProtocolError(f"not a valid msgpack message: {exc or type(exc).__name__}") from None


def _field(frame: tuple[Any, ...], index: int, name: str, kind: type, max_len: int = 0) -> Any:
    value: Any = frame[index]
    if type(value) is not kind:
        raise ProtocolError(f"envelope.{name}: expected {kind.__name__}, got {describe(value)}")
    if max_len and isinstance(value, str) and len(value) > max_len:
        raise ProtocolError(f"envelope.{name}: longer than {max_len} characters")
    return value


def _opt_str(frame: tuple[Any, ...], index: int, name: str) -> str | None:
    value = frame[index]
    if value is None:
        return None
    return _field(frame, index, name, str, _MAX_ID_LEN)  # type: ignore[no-any-return]


def decode(payload: bytes, limits: Limits = DEFAULT_LIMITS, *, validate: bool = True) -> Envelope:
    """Parse and validate one envelope.

    ``validate=False`` skips the per-field type checks (never the structure,
    versions or upcasting); the journal uses it for records it validated before
    committing them and whose CRC matched.
    """
    frame = unpack(payload, limits)
    if not isinstance(frame, tuple) or len(frame) != ENVELOPE_LEN:
        shown = f"array of {len(frame)}" if isinstance(frame, tuple) else type(frame).__name__
        raise ProtocolError(f"envelope: expected an array of {ENVELOPE_LEN} fields, got {shown}")
    v, seq, mid, ts, mtype, tv, actor, corr, cause, data = frame
    if v != ENVELOPE_VERSION or type(v) is not int:
        raise ProtocolError(f"envelope.v: unsupported envelope version {v!r} (this build reads {ENVELOPE_VERSION})")
    if validate:
        _field(frame, 1, "seq", int)
        if seq < 0:
            raise ProtocolError(f"envelope.seq: must be >= 0, got {seq}")
        _field(frame, 2, "id", str, _MAX_ID_LEN)
        if not mid:
            raise ProtocolError("envelope.id: must not be empty")
        if type(ts) is int:
            ts = float(ts)
        if type(ts) is not float or not math.isfinite(ts):
            raise ProtocolError(f"envelope.ts: expected a finite float, got {describe(ts)}")
        _field(frame, 4, "type", str, _MAX_NAME_LEN)
        _field(frame, 5, "tv", int)
        _field(frame, 6, "actor", str, _MAX_NAME_LEN)
        _opt_str(frame, 7, "corr")
        _opt_str(frame, 8, "cause")
    if type(data) is not dict:
        raise ProtocolError(f"{mtype}.data: expected map, got {describe(data)}")
    if type(mtype) is not str:
        raise ProtocolError(f"envelope.type: expected str, got {describe(mtype)}")
    if type(tv) is not int:
        raise ProtocolError(f"envelope.tv: expected int, got {describe(tv)}")
    message = build(mtype, upcast(mtype, tv, data), validate=validate)
    return Envelope(
        v=v, seq=seq, id=mid, ts=ts, type=mtype, tv=message.TV, actor=actor, corr=corr, cause=cause, data=message
    )


def decode_committed(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[int, float, Message]:
    """``(seq, ts, message)`` of a committed journal record, without building an Envelope.

    The replay hot path. Per-field checks are skipped (the record was validated
    before it was committed and its CRC matched); structure, envelope version
    and upcasting are not.
    """
    return committed_from_frame(unpack(payload, limits), payload, limits)


def committed_from_frame(frame: Any, payload: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[int, float, Message]:
    """``decode_committed`` for a record whose bytes the caller has already unpacked into ``frame``."""
    if type(frame) is tuple and len(frame) == ENVELOPE_LEN and frame[0] == ENVELOPE_VERSION:
        message = build_current(frame[4], frame[5], frame[9])
        if message is not None:
            return frame[1], frame[3], message
    return _slow_committed(payload, limits)


def _slow_committed(payload: bytes, limits: Limits) -> tuple[int, float, Message]:
    env = decode(payload, limits, validate=False)  # upcasts, or raises the precise ProtocolError
    return env.seq, env.ts, env.data


def roundtrip(message: Message) -> Message:
    """Encode and decode ``message`` in a throwaway envelope (for tests and checks)."""
    return decode(encode(Envelope.new(message, actor="roundtrip"))).data
