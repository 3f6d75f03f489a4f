"""ZeroMQ specifics: socket options, oversized frames, and the worker ROUTER/DEALER channel."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import zmq

from smart_tuner.actors.bus import BusError
from smart_tuner.actors.bus.zmqbus import (
    SocketOptions,
    WorkerConnection,
    WorkerServer,
    ZmqClient,
    ZmqSequencerPort,
    ipc_endpoints,
    new_context,
)
from smart_tuner.protocol import Envelope, decode, encode
from smart_tuner.protocol import messages as m
from tests.unit.busharness import alert, harness, propose, run_started


def test_every_socket_gets_linger_hwm_and_a_size_limit(tmp_path: Path) -> None:
    async def main() -> None:
        ctx = new_context()
        opts = SocketOptions(linger_ms=123, hwm=77, max_message_bytes=5000)
        port = ZmqSequencerPort(ctx, ipc_endpoints(tmp_path / "bus"), opts)
        client = ZmqClient(ctx, port.endpoints, opts)
        server = WorkerServer(ctx, port.endpoints.workers, opts)
        try:
            socks = [port._router, port._pub, client._dealer, client._sub, server._router]
            for sock in socks:
                assert sock is not None
                assert sock.getsockopt(zmq.LINGER) == 123
                assert sock.getsockopt(zmq.SNDHWM) == 77 and sock.getsockopt(zmq.RCVHWM) == 77
                assert sock.getsockopt(zmq.MAXMSGSIZE) == 5000 + 4096
        finally:
            await client.aclose()
            await server.aclose()
            await port.aclose()
            ctx.term()

    asyncio.run(main())


def test_oversized_frame_drops_that_peer_only(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness("zmq", tmp_path) as h:
            good = h.client()
            await propose(good, run_started())
            ctx = zmq.asyncio.Context()
            rogue = ctx.socket(zmq.DEALER)
            rogue.setsockopt(zmq.LINGER, 0)
            rogue.connect(h.sequencer.port.endpoints.propose)  # type: ignore[attr-defined]
            await rogue.send_multipart([b"id", os.urandom(3 << 20)])  # 3 MiB > the 1 MiB limit
            assert not await rogue.poll(300)  # no answer: ZeroMQ dropped the connection at the size limit
            rogue.close()
            ctx.term()
            assert await propose(good, alert(1)) == 2  # everyone else carries on

    asyncio.run(main())


def test_worker_channel_routes_by_worker_id_and_tracks_liveness(tmp_path: Path) -> None:
    async def main() -> None:
        ctx = new_context()
        opts = SocketOptions(linger_ms=0)
        endpoint = ipc_endpoints(tmp_path / "bus").workers
        server = WorkerServer(ctx, endpoint, opts)
        w1 = WorkerConnection(ctx, endpoint, "w1", opts)
        w2 = WorkerConnection(ctx, endpoint, "w2", opts)
        try:
            assert server.silent_for(b"w1") == float("inf")
            for conn, wid in ((w1, "w1"), (w2, "w2")):
                hello = m.WorkerHello(worker_id=wid, pid=os.getpid(), device="cpu", hparams={}, metrics=("loss",))
                await conn.send(encode(Envelope.new(hello, actor=wid)))
            seen = {}
            async with asyncio.timeout(10):
                while len(seen) < 2:
                    got = await server.recv(1.0)
                    if got is not None:
                        seen[got[0]] = decode(got[1]).data
            assert {k: v.worker_id for k, v in seen.items()} == {b"w1": "w1", b"w2": "w2"}  # type: ignore[attr-defined]
            assert server.silent_for(b"w1") < 10
            command = m.RunSegment(
                segment_id="s1",
                from_checkpoint=None,
                from_sha256=None,
                hparams={"lr": 0.01},
                steps=10,
                eval_every=5,
                report_every=1,
            )
            await server.send(b"w2", encode(Envelope.new(command, actor="supervisor")))
            async with asyncio.timeout(10):
                raw = None
                while raw is None:
                    raw = await w2.recv(1.0)
            assert decode(raw).data == command
            assert await w1.recv(0.05) is None  # routed to w2 only
            with pytest.raises(BusError, match="not connected"):
                await server.send(b"nobody", b"x")
        finally:
            for sock in (w1, w2, server):
                await sock.aclose()
            ctx.term()

    asyncio.run(main())
