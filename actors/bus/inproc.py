"""The in-process bus: asyncio queues instead of sockets, for unit tests.

Same contract as the ZeroMQ bus (the contract tests run against both),
including its lossiness: a subscriber whose queue is full loses records and
recovers them from the journal through ``committed_events``.
Imports the standard library and the bus base only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ._base import Ack, BusClient, BusError, BusTimeout, Proposal, SequencerPort

# Bounds: proposals wait here while the sequencer commits a group (4096 covers a
# full group commit); each subscriber buffers 1024 records before it starts to
# drop (and later re-reads the dropped ones from the journal).
PROPOSAL_QUEUE = 4096
FEED_QUEUE = 1024


class InprocHub:
    """One hub per run: the sequencer port and any number of clients."""

    def __init__(self, *, feed_queue: int = FEED_QUEUE) -> None:
        self._proposals: asyncio.Queue[Proposal] = asyncio.Queue(PROPOSAL_QUEUE)
        self._subscribers: set[asyncio.Queue[bytes]] = set()
        self._feed_queue = feed_queue
        self._closed = False
        self.dropped = 0

    def sequencer_port(self) -> SequencerPort:
        return _InprocSequencerPort(self)

    def client(self, name: str, *, subscribe: bool = True) -> BusClient:
        """A client; ``subscribe=False`` for one that only proposes (like ZmqClient's)."""
        if self._closed:
            raise BusError("the hub is closed")
        queue: asyncio.Queue[bytes] | None = None
        if subscribe:
            queue = asyncio.Queue(self._feed_queue)
            self._subscribers.add(queue)
        return _InprocClient(self, name, queue)

    def _publish(self, payload: bytes) -> None:
        for queue in self._subscribers:
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                self.dropped += 1


class _InprocSequencerPort(SequencerPort):
    def __init__(self, hub: InprocHub) -> None:
        self._hub = hub

    async def recv_proposal(self, timeout_s: float) -> Proposal | None:
        if not self._hub._proposals.empty():  # a burst is waiting: hand it over without a wait per item
            return self._hub._proposals.get_nowait()
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: on 3.11 it can swallow a cancellation
                return await self._hub._proposals.get()
        except TimeoutError:
            return None

    async def publish(self, payload: bytes) -> None:
        self._hub._publish(payload)

    async def aclose(self) -> None:
        self._hub._closed = True


def _resolver(done: asyncio.Future[Ack]) -> Callable[[Ack], Awaitable[None]]:
    async def reply(ack: Ack) -> None:
        if not done.done():
            done.set_result(ack)

    return reply


class _InprocClient(BusClient):
    def __init__(self, hub: InprocHub, name: str, queue: asyncio.Queue[bytes] | None) -> None:
        self._hub = hub
        self.name = name
        self._queue = queue

    async def propose_payload(self, payload: bytes, timeout_s: float) -> Ack:
        return (await self.propose_payloads([payload], timeout_s))[0]

    async def propose_payloads(self, payloads: Sequence[bytes], timeout_s: float) -> list[Ack]:
        if self._hub._closed:
            raise BusError("the hub is closed")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Ack]] = []
        try:
            async with asyncio.timeout(timeout_s):
                for payload in payloads:
                    done: asyncio.Future[Ack] = loop.create_future()
                    futures.append(done)
                    await self._hub._proposals.put(Proposal(bytes(payload), _resolver(done)))
                return list(await asyncio.gather(*futures))
        except TimeoutError:
            raise BusTimeout(f"no ack within {timeout_s} s") from None

    async def recv(self, timeout_s: float) -> bytes | None:
        if self._queue is None:
            raise BusError("this client did not subscribe to the feed")
        if not self._queue.empty():  # keeping up with a burst: no timer per record
            return self._queue.get_nowait()
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: on 3.11 it can swallow a cancellation
                return await self._queue.get()
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        if self._queue is not None:
            self._hub._subscribers.discard(self._queue)
