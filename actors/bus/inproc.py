"""The in-process bus: asyncio queues instead of sockets, for unit tests.

Same contract as the ZeroMQ bus (the contract tests run against both),
including its lossiness: a subscriber whose queue is full loses records and
recovers them from the journal through ``committed_events``.
Imports the standard library and the bus base only.
"""

from __future__ import annotations

import asyncio

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

    def client(self, name: str) -> BusClient:
        if self._closed:
            raise BusError("the hub is closed")
        queue: asyncio.Queue[bytes] = asyncio.Queue(self._feed_queue)
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
        try:
            return await asyncio.wait_for(self._hub._proposals.get(), timeout_s)
        except TimeoutError:
            return None

    async def publish(self, payload: bytes) -> None:
        self._hub._publish(payload)

    async def aclose(self) -> None:
        self._hub._closed = True


class _InprocClient(BusClient):
    def __init__(self, hub: InprocHub, name: str, queue: asyncio.Queue[bytes]) -> None:
        self._hub = hub
        self.name = name
        self._queue = queue

    async def propose_payload(self, payload: bytes, timeout_s: float) -> Ack:
        if self._hub._closed:
            raise BusError("the hub is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Ack] = loop.create_future()

        async def reply(ack: Ack) -> None:
            if not done.done():
                done.set_result(ack)

        try:
            async with asyncio.timeout(timeout_s):
                await self._hub._proposals.put(Proposal(bytes(payload), reply))
                return await done
        except TimeoutError:
            raise BusTimeout(f"no ack within {timeout_s} s") from None

    async def recv(self, timeout_s: float) -> bytes | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        self._hub._subscribers.discard(self._queue)
