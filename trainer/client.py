"""The trainer's one link to the tuner: a worker's connection to the supervisor.

    client = SupervisorClient(ctx, endpoint, worker_id="w0")
    await client.send(m.WorkerHello(...))
    command = await client.recv_command(timeout_s=0.5)    # RunSegment, AbortSegment, Shutdown, or None

Everything a worker sends is an envelope (events for the journal, heartbeats); what it
receives are commands. A malformed or unexpected message from the supervisor is
counted, logged once a second at most, and skipped: the worker keeps working.

It is the only module of ``trainer/`` that imports anything of ``actors/`` (the bus, and
nothing else: ``tests/unit/test_import_rules.py``); the worker takes its zmq context from
here too (``new_context``). The rest of ``trainer/`` runs without it (the harness and the
standalone ``train.py`` never import it). Imports ``protocol``, the bus package and the
standard library only.
"""

from __future__ import annotations

import argparse
import os
import time

import structlog

from ..actors.bus import BusError
from ..actors.bus.zmqbus import CURVE_ENV, CurveClient, SocketOptions, WorkerConnection, load_keypair, new_context
from ..protocol import Envelope, Message, ProtocolError, decode, encode

__all__ = ["SupervisorClient", "SupervisorUnreachable", "curve_of", "new_context"]

log = structlog.get_logger("worker.client")


class SupervisorUnreachable(Exception):
    """The supervisor did not take a message in time."""


class SupervisorClient:
    def __init__(
        self,
        ctx: object,
        endpoint: str,
        worker_id: str,
        opts: SocketOptions | None = None,
        curve: CurveClient | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.actor = f"worker:{worker_id}"
        self._conn = WorkerConnection(
            ctx,  # type: ignore[arg-type]
            endpoint,
            worker_id,
            opts or SocketOptions(linger_ms=2000),
            curve=curve,
        )
        self.malformed = 0
        self._logged_at = 0.0

    async def send(self, message: Message, *, corr: str | None = None, timeout_s: float = 10.0) -> None:
        try:
            await self._conn.send(encode(Envelope.new(message, actor=self.actor, corr=corr)), timeout_s)
        except BusError as exc:
            raise SupervisorUnreachable(str(exc)) from None

    async def recv_command(self, timeout_s: float) -> Envelope | None:
        """The next command from the supervisor, or None after ``timeout_s`` (or on bad input)."""
        payload = await self._conn.recv(timeout_s)
        if payload is None:
            return None
        try:
            env = decode(payload)
        except ProtocolError as exc:
            self._malformed(str(exc))
            return None
        if env.data.KIND != "command":
            self._malformed(f"{env.type} is not a command")
            return None
        return env

    def _malformed(self, error: str) -> None:
        self.malformed += 1
        now = time.monotonic()
        if now - self._logged_at >= 1.0:
            self._logged_at = now
            log.warning("malformed message from the supervisor", error=error, total=self.malformed)

    async def aclose(self) -> None:
        await self._conn.aclose()


def curve_of(args: argparse.Namespace) -> CurveClient | None:
    """The worker's CURVE identity: from the flags (a remote worker) or the environment (a local one)."""
    if args.curve_key_file is not None or args.curve_server_key is not None:
        if args.curve_key_file is None or args.curve_server_key is None:
            raise SystemExit("error: --curve-server-key and --curve-key-file go together")
        public, secret = load_keypair(args.curve_key_file)
        if secret is None:
            raise SystemExit(f"error: {args.curve_key_file} holds no secret key (give the .key_secret file)")
        return CurveClient(server_key=args.curve_server_key.encode(), public_key=public, secret_key=secret)
    values = [os.environ.get(name) for name in CURVE_ENV]
    if all(values):
        server, public, secret = (v.encode() for v in values if v)
        return CurveClient(server_key=server, public_key=public, secret_key=secret)
    return None
