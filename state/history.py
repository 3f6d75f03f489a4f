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

from ..protocol import Envelope, Message, ProtocolError, decode
from ..protocol.codec import decode_committed
from .journal import Journal, JournalError
from .model import TunerState
from .reducers import fold
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


def committed(journal: Journal, from_seq: int = 1, to_seq: int | None = None) -> Iterator[tuple[int, float, Message]]:
    """``(seq, ts, message)`` per record: what replay folds, without building envelopes."""
    for seq, payload in journal.read(from_seq, to_seq):
        try:
            item = decode_committed(payload)
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
