"""The msgpack codec: round trips for every registered message type, rejection of bad input
(fuzzed and case by case, each error naming the problem), and upcasting of old type versions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smart_tuner.protocol import (
    DEFAULT_LIMITS,
    Envelope,
    Limits,
    Message,
    ProtocolError,
    all_specs,
    decode,
    encode,
    messages,
    registry,
    unpack,
)
from smart_tuner.protocol.codec import decode_committed, roundtrip
from smart_tuner.protocol.registry import event, upcaster
from tests.unit.strategies import envelope, envelopes, same

SPECS = all_specs()

# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.cls.TYPE)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_message_type_round_trips(spec: registry.MessageSpec, data: st.DataObject) -> None:
    env = data.draw(envelopes(spec))
    payload = encode(env)

    back = decode(payload)
    assert same(back, env), f"{back!r} != {env!r}"
    assert encode(back) == payload  # the encoding is canonical: decoding loses nothing
    seq, ts, message = decode_committed(payload)
    assert same((seq, ts, message), (env.seq, env.ts, env.data))
    assert same(decode(payload, validate=False), env)


def test_the_registry_covers_events_and_commands() -> None:
    kinds = {s.cls.TYPE: s.kind for s in SPECS}
    assert kinds["MetricsObserved"] == "event"
    assert kinds["RunSegment"] == "command"
    assert kinds["Heartbeat"] == "signal"  # a live fact about a connection, not an order
    assert all(s.tv >= 1 for s in SPECS)
    # Decision events carry the why with them.
    assert all({"reason", "evidence"} <= set(s.fields) for s in SPECS if s.decision)


def test_nan_and_infinity_survive_in_float_fields() -> None:
    msg = messages.MetricsObserved(
        segment_id=None, source="worker", step=3, metrics={"a": float("nan"), "b": float("inf"), "c": -0.0}
    )
    back = roundtrip(msg)
    assert isinstance(back, messages.MetricsObserved)
    assert same(back.metrics, msg.metrics)


def test_int_in_a_float_field_is_normalised_to_float() -> None:
    payload = _payload(_frame(data={"metrics": {"loss": 2}}))
    metrics = decode(payload).data.metrics  # type: ignore[attr-defined]
    assert metrics == {"loss": 2.0}
    assert type(metrics["loss"]) is float


# --- fuzzing: any input either decodes or raises ProtocolError -----------------------------------


def _all_decoders(payload: bytes) -> None:
    """Run every decoder over ``payload``; each must succeed or raise ProtocolError, nothing else."""
    try:
        env = decode(payload)
    except ProtocolError:
        pass
    else:
        # Whatever decodes is a valid envelope: it re-encodes and decodes to itself.
        assert same(decode(encode(env)), env)
    for lenient in (lambda p: decode(p, validate=False), decode_committed):
        with contextlib.suppress(ProtocolError):
            lenient(payload)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_protocol_error(payload: bytes) -> None:
    _all_decoders(payload)


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0), st.just(0)),
)


def _mutate(payload: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(payload)
    for op, where, value in mutations:
        if not buf:
            break
        pos = where % len(buf)
        if op == "flip":
            buf[pos] ^= value
        elif op == "insert":
            buf.insert(pos, value)
        elif op == "delete":
            del buf[pos]
        else:
            del buf[pos:]
    return bytes(buf)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_encodings_decode_or_raise_protocol_error(
    data: st.DataObject, mutations: list[tuple[str, int, int]]
) -> None:
    spec = data.draw(st.sampled_from(SPECS), label="spec")
    payload = encode(data.draw(envelopes(spec), label="envelope"))
    _all_decoders(_mutate(payload, mutations))


# --- specific rejections: each error names the problem -------------------------------------------


def _frame(**changes: Any) -> list[Any]:
    """A valid MetricsObserved wire frame as a list; ``data=`` entries are merged into the fields."""
    msg = messages.MetricsObserved(segment_id="seg-1", source="worker", step=100, metrics={"loss": 0.5})
    frame = list(msgpack.unpackb(encode(envelope(7, msg))))
    frame[9] = {**frame[9], **changes.pop("data", {})}
    names = ["v", "seq", "id", "ts", "type", "tv", "actor", "corr", "cause"]
    for name, value in changes.items():
        frame[names.index(name)] = value
    return frame


def _payload(frame: Any) -> bytes:
    return bytes(msgpack.packb(frame, use_bin_type=True))


def _rejected(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(ProtocolError) as info:
        decode(payload, limits)
    return str(info.value)


def test_the_baseline_frame_is_valid() -> None:
    env = decode(_payload(_frame()))
    assert env.seq == 7
    assert env.data == messages.MetricsObserved(segment_id="seg-1", source="worker", step=100, metrics={"loss": 0.5})


def test_truncated_payload() -> None:
    payload = _payload(_frame())
    for cut in (1, 5, len(payload) // 2, len(payload) - 1):
        assert "incomplete input" in _rejected(payload[:cut])


def test_empty_payload() -> None:
    assert "empty message" in _rejected(b"")


def test_oversized_payload() -> None:
    payload = _payload(_frame())
    small = Limits(max_message_bytes=len(payload) - 1)
    assert f"{len(payload)} bytes exceeds the limit of {len(payload) - 1}" in _rejected(payload, small)
    huge = b"\x00" * (DEFAULT_LIMITS.max_message_bytes + 1)
    assert f"exceeds the limit of {DEFAULT_LIMITS.max_message_bytes}" in _rejected(huge)


def test_encode_refuses_an_oversized_message() -> None:
    msg = messages.ProtocolViolation(where="x", error="e" * DEFAULT_LIMITS.max_message_bytes, count=1)
    with pytest.raises(ProtocolError, match=r"ProtocolViolation: encoded size \d+ bytes exceeds the limit"):
        encode(envelope(1, msg))


def test_too_long_string() -> None:
    long_source = "s" * (DEFAULT_LIMITS.max_str_len + 1)
    assert "max_str_len" in _rejected(_payload(_frame(data={"source": long_source})))


def test_not_an_array() -> None:
    assert "expected an array of 10 fields, got dict" in _rejected(_payload({"v": 1}))
    assert "expected an array of 10 fields, got int" in _rejected(_payload(42))


def test_wrong_envelope_length() -> None:
    assert "expected an array of 10 fields, got array of 9" in _rejected(_payload(_frame()[:9]))
    assert "got array of 11" in _rejected(_payload([*_frame(), None]))


@pytest.mark.parametrize("version", [0, 2, True, "1", None])
def test_bad_envelope_version(version: Any) -> None:
    text = _rejected(_payload(_frame(v=version)))
    assert "envelope.v: unsupported envelope version" in text
    assert repr(version) in text


def test_unknown_type_tag() -> None:
    assert "unknown message type 'NoSuchEvent'" in _rejected(_payload(_frame(type="NoSuchEvent")))


def test_newer_type_version_than_supported() -> None:
    text = _rejected(_payload(_frame(tv=2)))
    assert "MetricsObserved: type version 2 is newer than this build understands (1)" in text


def test_type_version_below_one() -> None:
    assert "type version must be >= 1, got 0" in _rejected(_payload(_frame(tv=0)))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"step": "x"}, "MetricsObserved.step: expected int, got str 'x'"),
        ({"step": True}, "MetricsObserved.step: expected int, got bool True"),
        ({"step": 1.5}, "MetricsObserved.step: expected int, got float 1.5"),
        ({"source": None}, "MetricsObserved.source: expected str, got NoneType None"),
        ({"segment_id": 3}, "MetricsObserved.segment_id: expected str | NoneType, got int 3"),
        ({"metrics": [1.0]}, "MetricsObserved.metrics: expected map, got tuple"),
        ({"metrics": {"loss": "low"}}, "MetricsObserved.metrics.loss: expected float, got str 'low'"),
        ({"metrics": {"loss": True}}, "MetricsObserved.metrics.loss: expected float, got bool True"),
    ],
)
def test_wrong_field_type_names_the_field(fields: dict[str, Any], expected: str) -> None:
    assert expected in _rejected(_payload(_frame(data=fields)))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("seq", -1, "envelope.seq: must be >= 0, got -1"),
        ("seq", "1", "envelope.seq: expected int, got str '1'"),
        ("id", "", "envelope.id: must not be empty"),
        ("id", "x" * 65, "envelope.id: longer than 64 characters"),
        ("ts", float("nan"), "envelope.ts: expected a finite float, got float nan"),
        ("ts", "now", "envelope.ts: expected a finite float"),
        ("actor", 5, "envelope.actor: expected str, got int 5"),
        ("corr", 5, "envelope.corr: expected str, got int 5"),
        ("cause", "c" * 65, "envelope.cause: longer than 64 characters"),
        ("tv", "1", "envelope.tv: expected int, got str '1'"),
        ("type", 12, "envelope.type: expected str, got int 12"),
    ],
)
def test_bad_envelope_field_names_the_field(field: str, value: Any, expected: str) -> None:
    assert expected in _rejected(_payload(_frame(**{field: value})))


def test_data_must_be_a_map() -> None:
    assert "MetricsObserved.data: expected map, got tuple (1,)" in _rejected(_payload([*_frame()[:9], [1]]))


def test_missing_field() -> None:
    frame = _frame()
    del frame[9]["step"]
    assert "MetricsObserved: missing field(s) ['step']" in _rejected(_payload(frame))


def test_a_field_with_a_default_may_be_missing() -> None:
    frame = _frame(type="SegmentFailed", data={})
    frame[9] = {"segment_id": "s", "reason": "nan", "detail": "loss went NaN"}
    env = decode(_payload(frame))
    assert env.data == messages.SegmentFailed(segment_id="s", reason="nan", detail="loss went NaN", step=None)


def test_unknown_field() -> None:
    assert "MetricsObserved: unknown field(s) ['bogus']" in _rejected(_payload(_frame(data={"bogus": 1})))


def test_literal_out_of_range() -> None:
    frame = _frame(type="SegmentFailed")
    frame[9] = {"segment_id": "s", "reason": "bored", "detail": ""}
    assert "SegmentFailed.reason: expected one of 'nan' | 'oom'" in _rejected(_payload(frame))


def test_non_string_map_key() -> None:
    # An int key is refused by msgpack itself (strict_map_key) ...
    assert "int is not allowed for map key" in _rejected(_payload(_frame(data={"metrics": {1: 2.0}})))
    # ... a bytes key gets through msgpack (an empty bin is within max_bin_len) and is refused by the schema.
    text = _rejected(_payload(_frame(data={"metrics": {b"": 2.0}})))
    assert "MetricsObserved.metrics: map keys must be str, got bytes b''" in text


def test_bytes_field_name_next_to_an_unknown_field() -> None:
    # Regression: sorting a mix of str and bytes field names raised TypeError instead of ProtocolError.
    text = _rejected(_payload(_frame(data={b"": 1, "zz": 2})))
    assert "unknown field(s) [b'', 'zz']" in text


def test_ext_type() -> None:
    text = _rejected(_payload(_frame(data={"metrics": {"loss": msgpack.ExtType(5, b"abc")}})))
    assert "exceeds max_ext_len(0)" in text
    # A zero-length ext gets through msgpack's limit and is refused by the field check.
    text = _rejected(_payload(_frame(data={"metrics": {"loss": msgpack.ExtType(5, b"")}})))
    assert "MetricsObserved.metrics.loss: expected float, got ExtType" in text


def test_binary_payloads_are_refused() -> None:
    assert "max_bin_len" in _rejected(_payload(_frame(data={"source": b"abc"})))


def test_json_nesting_is_bounded() -> None:
    deep: Any = 1
    for _ in range(DEFAULT_LIMITS.max_depth + 2):
        deep = [deep]
    frame = _frame(type="StopDecided")
    frame[9] = {"rule": "r", "reason": "y", "evidence": {"deep": deep}}
    assert f"nested deeper than {DEFAULT_LIMITS.max_depth} levels" in _rejected(_payload(frame))


def test_not_msgpack_at_all() -> None:
    assert "not a valid msgpack message" in _rejected(b"\xc1")  # 0xc1 is never used by msgpack


def test_unpack_refuses_non_bytes() -> None:
    with pytest.raises(ProtocolError, match="expected bytes, got str"):
        unpack("not bytes")  # type: ignore[arg-type]


# --- decode_committed ------------------------------------------------------------------------------


def test_decode_committed_raises_the_precise_error_for_bad_structure() -> None:
    with pytest.raises(ProtocolError, match="unsupported envelope version 2"):
        decode_committed(_payload(_frame(v=2)))
    with pytest.raises(ProtocolError, match="unknown message type 'Nope'"):
        decode_committed(_payload(_frame(type="Nope")))
    with pytest.raises(ProtocolError, match="newer than this build"):
        decode_committed(_payload(_frame(tv=9)))


# --- upcasting -------------------------------------------------------------------------------------

PROBE = "CodecTestUpcastProbe"
PROBE_V3 = "CodecTestUpcastProbeWithGap"


@pytest.fixture
def probe_types() -> Iterator[tuple[type[Message], type[Message]]]:
    """Two test-only event types, registered for one test and removed again.

    ``CodecTestUpcastProbe`` is at tv=2; v1 had no ``weight`` and its ``label``
    was called ``name``. ``CodecTestUpcastProbeWithGap`` is at tv=3 with an
    upcaster from 1 only, so a v1 payload cannot be brought up to date.
    """

    @event(tv=2)
    class CodecTestUpcastProbe(Message):
        label: str
        weight: float

    @upcaster(PROBE, from_tv=1)
    def _probe_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in data.items() if k != "name"}
        return {**out, "label": data["name"], "weight": 1.0}

    @event(tv=3)
    class CodecTestUpcastProbeWithGap(Message):
        label: str

    @upcaster(PROBE_V3, from_tv=1)
    def _gap_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return data

    try:
        yield CodecTestUpcastProbe, CodecTestUpcastProbeWithGap
    finally:
        for name in (PROBE, PROBE_V3):
            registry._SPECS.pop(name, None)
            registry._UPCASTERS.pop((name, 1), None)


def _probe_payload(type_name: str, tv: int, data: dict[str, Any]) -> bytes:
    return _payload([1, 3, "probe-id", 12.5, type_name, tv, "old-build", None, None, data])


def test_an_old_type_version_is_upcast_on_decode(probe_types: tuple[type[Message], type[Message]]) -> None:
    probe, _ = probe_types
    payload = _probe_payload(PROBE, 1, {"name": "from v1"})

    env = decode(payload)
    assert env.tv == 2
    assert env.data == probe(label="from v1", weight=1.0)  # type: ignore[call-arg]
    assert decode_committed(payload) == (3, 12.5, env.data)
    # The current version decodes as is, and re-encodes at the current version.
    current = decode(_probe_payload(PROBE, 2, {"label": "now", "weight": 0.25}))
    assert current.data == probe(label="now", weight=0.25)  # type: ignore[call-arg]
    assert msgpack.unpackb(encode(env))[5] == 2


def test_a_v1_payload_is_checked_after_upcasting(probe_types: tuple[type[Message], type[Message]]) -> None:
    # v1 had no "label": the upcaster maps "name"; an int there is caught by the v2 schema.
    text = _rejected(_probe_payload(PROBE, 1, {"name": 5}))
    assert f"{PROBE}.label: expected str, got int 5" in text


def test_a_missing_upcaster_is_named(probe_types: tuple[type[Message], type[Message]]) -> None:
    assert f"{PROBE_V3}: no upcaster from type version 2" in _rejected(_probe_payload(PROBE_V3, 1, {"label": "x"}))
    assert decode(_probe_payload(PROBE_V3, 3, {"label": "x"})).data.label == "x"  # type: ignore[attr-defined]


def test_registering_twice_is_refused(probe_types: tuple[type[Message], type[Message]]) -> None:
    with pytest.raises(TypeError, match="registered twice"):

        @event(tv=1)
        class CodecTestUpcastProbe(Message):
            label: str

    with pytest.raises(TypeError, match="registered twice"):
        upcaster(PROBE, from_tv=1)(lambda data: data)


def test_probe_types_are_gone_after_the_fixture() -> None:
    # The other tests (and the reducers' completeness check) must not see the test-only types.
    assert PROBE not in {s.cls.TYPE for s in all_specs()}
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode(_probe_payload(PROBE, 2, {"label": "x", "weight": 1.0}))


def test_envelope_new_is_a_proposal() -> None:
    msg = messages.StopRequested(source="cli", reason="operator")
    env = Envelope.new(msg, actor="cli", corr="c1")
    assert (env.seq, env.type, env.tv, env.corr, env.cause) == (0, "StopRequested", 1, "c1", None)
    assert env.with_seq(9).seq == 9
    assert same(decode(encode(env.with_seq(9))), env.with_seq(9))
