"""A sequencer on a real journal with either bus (in-process or ZeroMQ ipc), for contract tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from smart_tuner.actors.bus import BusClient, InprocHub, SequencerPort
from smart_tuner.actors.bus.zmqbus import SocketOptions, ZmqClient, ZmqSequencerPort, ipc_endpoints, new_context
from smart_tuner.actors.sequencer import Sequencer, SequencerSettings
from smart_tuner.protocol import Envelope
from smart_tuner.protocol import messages as m
from smart_tuner.state.journal import FileJournal
from smart_tuner.state.model import TunerState

KINDS = ("inproc", "zmq")


@dataclass
class Harness:
    kind: str
    journal: FileJournal
    sequencer: Sequencer
    make_client: Callable[..., BusClient]
    clients: list[BusClient] = field(default_factory=list)

    def client(self, **kwargs: object) -> BusClient:
        c = self.make_client(**kwargs)
        self.clients.append(c)
        return c


def run_started() -> m.RunStarted:
    return m.RunStarted(
        run_id="r1", config_hash="h" * 64, config={}, strategy="none", seed=0, host="test", pid=1, version="t"
    )


def alert(i: int | str) -> m.AlertSent:
    return m.AlertSent(channel="test", severity="info", title=f"a{i}", dedup_key=str(i), ok=True)


@contextlib.asynccontextmanager
async def harness(kind: str, tmp_path: Path, *, hwm: int = 10_000, feed_queue: int = 1024) -> AsyncIterator[Harness]:
    journal = FileJournal.open(tmp_path / "events.log")
    ctx = new_context() if kind == "zmq" else None
    port: SequencerPort
    if kind == "zmq":
        opts = SocketOptions(linger_ms=0, hwm=hwm)
        zport = ZmqSequencerPort(ctx, ipc_endpoints(tmp_path / "bus"), opts)  # type: ignore[arg-type]
        port = zport

        def make_client(**kwargs: object) -> BusClient:
            return ZmqClient(ctx, zport.endpoints, opts, **kwargs)  # type: ignore[arg-type]

    else:
        hub = InprocHub(feed_queue=feed_queue)
        port = hub.sequencer_port()

        def make_client(**kwargs: object) -> BusClient:
            return hub.client("test")

    sequencer = Sequencer(journal, port, TunerState(), SequencerSettings(state_write_interval_s=3600))
    h = Harness(kind, journal, sequencer, make_client)
    task = asyncio.create_task(sequencer.run())
    await sequencer.ready.wait()
    try:
        yield h
    finally:
        sequencer.stop()
        await task
        for c in h.clients:
            await c.aclose()
        await port.aclose()
        if ctx is not None:
            ctx.term()
        journal.close()


async def propose(client: BusClient, message: m.Message) -> int:
    return await client.propose(Envelope.new(message, actor="test"), timeout_s=10)
