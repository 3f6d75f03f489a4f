"""The envelope around every message: ``v, seq, id, ts, type, tv, actor, corr, cause, data``.

``seq`` is 0 while an event is only proposed; the journal assigns the gapless
sequence number when it commits. ``corr`` groups the messages of one piece of
work (a segment, a trial), ``cause`` is the id of the event that led to this one.

Imports the standard library and this package only.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass

from .registry import Message

ENVELOPE_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    seq: int
    id: str
    ts: float
    type: str
    tv: int
    actor: str
    corr: str | None
    cause: str | None
    data: Message
    v: int = ENVELOPE_VERSION

    @classmethod
    def new(
        cls,
        data: Message,
        *,
        actor: str,
        corr: str | None = None,
        cause: str | None = None,
        ts: float | None = None,
    ) -> Envelope:
        """A proposed (uncommitted, ``seq=0``) envelope around ``data``."""
        return cls(
            seq=0,
            id=uuid.uuid4().hex,
            ts=time.time() if ts is None else ts,
            type=data.TYPE,
            tv=data.TV,
            actor=actor,
            corr=corr,
            cause=cause,
            data=data,
        )

    def with_seq(self, seq: int) -> Envelope:
        return dataclasses.replace(self, seq=seq)
