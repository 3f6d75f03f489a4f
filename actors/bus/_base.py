"""The bus contract: how actors propose events and hear committed ones.

Two roles, two small interfaces:

* ``BusClient`` (an actor, ``tail``, ``stop``): ``propose`` an event and get
  its committed ``seq`` back (or ``ProposalRejected``), and ``recv`` committed
  records from the live feed. The live feed may drop records (a slow
  subscriber, a late joiner); ``committed_events`` turns it into a gapless,
  duplicate-free stream by filling gaps from the journal.
* ``SequencerPort`` (the journal host): ``recv_proposal`` and ``publish``.

Implementations: ``inproc.InprocHub`` (unit tests, one process) and
``zmqbus`` (ROUTER/DEALER for proposals, PUB/SUB for committed events).
Gaps are filled from anything with ``read(from_seq, to_seq)`` (``LogReader``: a journal or
a follower of one), so this module imports no storage. Imports the standard library,
msgpack, structlog and ``protocol`` only.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgpack
import structlog

from ...protocol import Envelope, ProtocolError, decode, encode

log = structlog.get_logger("bus")


class BusError(Exception):
    """The bus could not deliver (closed, timed out, refused)."""


class BusTimeout(BusError):
    pass


class ProposalRejected(BusError):
    """The sequencer refused a proposal (malformed, or an invalid transition); nothing was committed."""


@dataclass(frozen=True, slots=True)
class Ack:
    ok: bool
    seq: int
    error: str = ""

    def pack(self) -> bytes:
        return msgpack.packb([self.ok, self.seq, self.error])  # type: ignore[no-any-return]

    @classmethod
    def unpack(cls, raw: bytes) -> Ack:
        try:
            ok, seq, error = msgpack.unpackb(raw, raw=False, max_str_len=65536, max_array_len=3, max_map_len=0)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ProtocolError(f"malformed ack: {exc}") from None
        if type(ok) is not bool or type(seq) is not int or type(error) is not str:
            raise ProtocolError("malformed ack: expected [bool, int, str]")
        return cls(ok, seq, error)


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposal as the sequencer receives it: raw bytes and a way to answer."""

    payload: bytes
    reply: Callable[[Ack], Awaitable[None]]


class BusClient(abc.ABC):
    """An actor's (or a CLI tool's) handle on the bus."""

    @abc.abstractmethod
    async def propose_payload(self, payload: bytes, timeout_s: float) -> Ack:
        """Send one encoded proposal and wait for its ack."""

    async def propose_payloads(self, payloads: Sequence[bytes], timeout_s: float) -> list[Ack]:
        """Send several encoded proposals in one go; one ack each, in order (one at a time by default)."""
        return [await self.propose_payload(p, timeout_s) for p in payloads]

    @abc.abstractmethod
    async def recv(self, timeout_s: float) -> bytes | None:
        """The next record from the live feed, or None after ``timeout_s``."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def propose(self, env: Envelope, timeout_s: float = 10.0) -> int:
        """Propose ``env``; returns its committed seq. Raises ProposalRejected or BusTimeout."""
        ack = await self.propose_payload(encode(env), timeout_s)
        if not ack.ok:
            raise ProposalRejected(f"{env.type}: {ack.error}")
        return ack.seq

    async def propose_many(self, envs: Sequence[Envelope], timeout_s: float = 10.0) -> list[Ack]:
        """Propose a burst of events in one round trip (they may land in one group commit).

        Returns one ack per event, in order; a refused event does not stop the others.
        """
        return await self.propose_payloads([encode(e) for e in envs], timeout_s)


class SequencerPort(abc.ABC):
    """The journal host's side of the bus."""

    @abc.abstractmethod
    async def recv_proposal(self, timeout_s: float) -> Proposal | None: ...

    @abc.abstractmethod
    async def publish(self, payload: bytes) -> None: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...


class LogReader(Protocol):
    """Where committed records can be re-read to fill gaps (a Journal, or a follower of one)."""

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]: ...


@dataclass
class StreamStats:
    delivered: int = 0
    gap_filled: int = 0
    duplicates: int = 0
    malformed: int = 0


async def committed_events(
    client: BusClient,
    log_reader: LogReader,
    from_seq: int = 1,
    *,
    poll_s: float = 0.5,
    stats: StreamStats | None = None,
    stop_when_idle: Callable[[], bool] | None = None,
) -> AsyncIterator[Envelope]:
    """Every committed event from ``from_seq`` on, in order, once each.

    Runs forever, unless ``stop_when_idle`` is given: it is asked whenever the
    feed was quiet for ``poll_s`` and the log had nothing new, and the stream
    ends when it answers True (``tail`` uses it to end once a run is over).

    Catches up from the log, then follows the live feed; a jump in ``seq``
    (dropped by a full queue, or published before we subscribed) is filled
    from the log, and so is anything committed while the feed was quiet.
    Malformed records on the feed are counted and skipped.
    """
    stats = stats if stats is not None else StreamStats()
    next_seq = from_seq

    def from_log(upto: int | None) -> Iterator[Envelope]:
        nonlocal next_seq
        for seq, payload in log_reader.read(next_seq, upto):
            env = decode(payload, validate=False)
            if env.seq != seq:
                raise BusError(f"journal record {seq} holds seq {env.seq}")
            next_seq = seq + 1
            stats.gap_filled += 1
            yield env

    async def drain_log(upto: int | None) -> AsyncIterator[Envelope]:
        for n, env in enumerate(from_log(upto), 1):
            yield env
            if n % 256 == 0:  # a long catch-up must not starve the other tasks on the loop
                await asyncio.sleep(0)

    async for env in drain_log(None):
        yield env
    while True:
        raw = await client.recv(poll_s)
        if raw is None:  # quiet: anything committed that the feed did not bring?
            before = next_seq
            async for env in drain_log(None):
                yield env
            if next_seq == before and stop_when_idle is not None and stop_when_idle():
                return
            continue
        try:
            env = decode(raw)
        except ProtocolError as exc:
            stats.malformed += 1
            log.warning("malformed record on the live feed", error=str(exc), count=stats.malformed)
            continue
        if env.seq < next_seq:
            stats.duplicates += 1
            continue
        if env.seq > next_seq:
            async for gap_env in drain_log(env.seq - 1):
                yield gap_env
            if env.seq != next_seq:  # the log does not have the gap yet: read it on the next poll
                continue
        next_seq = env.seq + 1
        stats.delivered += 1
        yield env
