"""Reading events back from a journal and folding them into state.

``events(journal)`` decodes committed records and checks that record *k*
holds ``seq == k`` (a mismatch means the log was tampered with or spliced).
``load(journal, ...)`` is replay with optional snapshot and upper bound: the
one function that ``resume``, ``replay``, ``status`` and the tests share.

Imports the standard library, ``protocol`` and ``state`` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..protocol import Envelope, ProtocolError, decode
from ..protocol import messages as m
from ..protocol.codec import ENVELOPE_LEN, committed_from_frame, unpack
from ..protocol.envelope import ENVELOPE_VERSION
from .fold import Folded, fold
from .journal import Journal, JournalError
from .model import TunerState
from .snapshot import latest_snapshot


class HistoryError(JournalError):
    """A committed record cannot be read back as the event it should be."""


def decode_record(seq: int, payload: bytes) -> Envelope:
    # Records were validated before they were committed and their CRC matched:
    # skip the per-field checks, keep the structural ones and upcasting.
    try:
        env = decode(payload, validate=False)
    except ProtocolError as exc:
        raise HistoryError(f"record {seq}: {exc}") from None
    if env.seq != seq:
        raise HistoryError(f"record {seq} holds seq {env.seq}: the log is not gapless")
    return env


def events(journal: Journal, from_seq: int = 1, to_seq: int | None = None) -> Iterator[Envelope]:
    for seq, payload in journal.read(from_seq, to_seq):
        yield decode_record(seq, payload)


_RAW_TYPE, _RAW_TV = m.MetricsObserved.TYPE, m.MetricsObserved.TV


def committed(journal: Journal, from_seq: int = 1, to_seq: int | None = None) -> Iterator[tuple[int, float, Folded]]:
    """``(seq, ts, message)`` per record: what replay folds, without building envelopes.

    A current-version ``MetricsObserved`` (most of a log) comes as its raw data map,
    which ``fold`` accumulates directly: building a message object for each one was
    a fifth of the replay time. Anything unusual takes the full decoder, which
    upcasts or raises the precise error.
    """
    for seq, payload in journal.read(from_seq, to_seq):
        try:
            frame = unpack(payload)
        except ProtocolError as exc:
            raise HistoryError(f"record {seq}: {exc}") from None
        if type(frame) is tuple and len(frame) == ENVELOPE_LEN and frame[0] == ENVELOPE_VERSION and frame[1] == seq:
            data = frame[9]
            if (
                frame[4] == _RAW_TYPE
                and frame[5] == _RAW_TV
                and type(data) is dict
                and type(data.get("step")) is int
                and type(data.get("metrics")) is dict
            ):
                yield seq, frame[3], data
                continue
        try:
            item = committed_from_frame(frame, payload)
        except ProtocolError as exc:
            raise HistoryError(f"record {seq}: {exc}") from None
        if item[0] != seq:
            raise HistoryError(f"record {seq} holds seq {item[0]}: the log is not gapless")
        yield item


def load(
    journal: Journal, *, until: int | None = None, snapshots: Path | None = None, start: TunerState | None = None
) -> TunerState:
    """The state after replaying the log up to ``until`` (the head by default)."""
    state = start or TunerState()
    limit = journal.last_seq if until is None else min(until, journal.last_seq)
    if snapshots is not None:
        snap = latest_snapshot(snapshots, limit)
        if snap is not None and snap.last_seq > state.last_seq:
            state = snap
    return fold(committed(journal, state.last_seq + 1, limit), state)
