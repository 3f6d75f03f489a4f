"""The ZeroMQ bus: the only module that imports zmq.

Sockets (all with explicit LINGER, send/receive HWM and MAXMSGSIZE):

* proposals: actors' DEALER -> the sequencer's ROUTER; frames
  ``[request_id, payload]``, answered ``[request_id, ack]``;
* committed events: the sequencer's PUB -> every SUB (actors, ``tail``);
* workers: the supervisor's ROUTER <-> each worker's DEALER (routing id = worker id).

Waits are ``poll`` then a non-blocking ``recv``: cancelling a poll never loses
a message (cancelling a pending ``recv`` can). Endpoints default to ``ipc://``
sockets in ``RUN_DIR/bus`` (mode 0700), written to ``bus/endpoints.json`` for
clients in other processes. Imports zmq, msgpack, the standard library and the
bus base only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import zmq
import zmq.asyncio

from ._base import Ack, BusClient, BusError, BusTimeout, Proposal, SequencerPort

IPC_PATH_MAX = 100  # sun_path holds 107 bytes on Linux; keep a margin
RECV_BATCH = 256  # proposals taken per wake-up: fewer polls under load, small enough to stay fair
ENDPOINTS_FILE = "endpoints.json"


@dataclass(frozen=True, slots=True)
class SocketOptions:
    linger_ms: int = 1000
    hwm: int = 10_000
    max_message_bytes: int = 1 << 20

    def apply(self, sock: zmq.asyncio.Socket) -> None:
        sock.setsockopt(zmq.LINGER, self.linger_ms)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        # Frames carry a small header beside the payload; a peer that sends more is disconnected.
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes + 4096)


@dataclass(frozen=True, slots=True)
class BusEndpoints:
    propose: str
    publish: str
    workers: str

    def write(self, bus_dir: Path) -> None:
        tmp = bus_dir / (ENDPOINTS_FILE + ".tmp")
        tmp.write_text(json.dumps({**asdict(self), "pid": os.getpid()}, indent=1))
        os.replace(tmp, bus_dir / ENDPOINTS_FILE)

    @classmethod
    def read(cls, bus_dir: Path) -> BusEndpoints:
        path = bus_dir / ENDPOINTS_FILE
        try:
            raw = json.loads(path.read_text())
            return cls(propose=raw["propose"], publish=raw["publish"], workers=raw["workers"])
        except FileNotFoundError:
            raise BusError(f"{path}: no bus endpoints (the coordinator has never run here)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise BusError(f"{path}: unreadable bus endpoints ({exc})") from None


def private_dir(path: Path) -> Path:
    """Create ``path`` as a directory only we can enter (0700), or refuse one that others can."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    st = path.stat()
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise BusError(f"{path}: socket directory must be owned by us with mode 0700")
    return path


def ipc_endpoints(bus_dir: Path) -> BusEndpoints:
    """ipc endpoints inside ``bus_dir``, or in a private short directory if that path is too long."""
    sock_dir = private_dir(bus_dir)
    if len(str(sock_dir.resolve())) + len("/prop") > IPC_PATH_MAX:
        digest = hashlib.sha1(str(bus_dir.resolve()).encode()).hexdigest()[:16]
        sock_dir = private_dir(Path("/tmp") / f"smart-tuner-{os.getuid()}")
        sock_dir = private_dir(sock_dir / digest)
    base = sock_dir.resolve()
    return BusEndpoints(propose=f"ipc://{base}/prop", publish=f"ipc://{base}/pub", workers=f"ipc://{base}/work")


def _socket(ctx: zmq.asyncio.Context, kind: int, opts: SocketOptions) -> zmq.asyncio.Socket:
    sock = ctx.socket(kind)
    opts.apply(sock)
    return sock


def _bind(sock: zmq.asyncio.Socket, endpoint: str) -> str:
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        host = endpoint[len("tcp://") : -len(":0")]
        port = sock.bind_to_random_port(f"tcp://{host}")
        return f"tcp://{host}:{port}"
    if endpoint.startswith("ipc://"):
        Path(endpoint[len("ipc://") :]).unlink(missing_ok=True)  # a stale socket file of a dead coordinator
    sock.bind(endpoint)
    return endpoint


class ZmqSequencerPort(SequencerPort):
    """ROUTER for proposals and PUB for committed events, bound by the journal host."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoints: BusEndpoints, opts: SocketOptions) -> None:
        self._router = _socket(ctx, zmq.ROUTER, opts)
        self._pub = _socket(ctx, zmq.PUB, opts)
        try:
            propose = _bind(self._router, endpoints.propose)
            publish = _bind(self._pub, endpoints.publish)
        except BaseException:
            self._router.close(0)
            self._pub.close(0)
            raise
        self.endpoints = BusEndpoints(propose=propose, publish=publish, workers=endpoints.workers)
        self.malformed_frames = 0
        self._inbox: deque[list[bytes]] = deque()

    async def _fill_inbox(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for proposals, then take what is there (up to a batch) in one go."""
        if not await self._router.poll(max(1, int(timeout_s * 1000))):
            return False
        for _ in range(RECV_BATCH):
            try:
                self._inbox.append(await self._router.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        return True

    async def recv_proposal(self, timeout_s: float) -> Proposal | None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._inbox:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await self._fill_inbox(remaining):
                    return None
                if not self._inbox:
                    continue
            frames = self._inbox.popleft()
            if len(frames) != 3:
                # Not our framing: answer if we can tell who sent it, never crash.
                self.malformed_frames += 1
                if len(frames) >= 2:
                    await self._send_ack(frames[0], frames[1] if len(frames) > 2 else b"", Ack(False, 0, "bad framing"))
                continue
            identity, request_id, payload = frames

            async def reply(ack: Ack, identity: bytes = identity, request_id: bytes = request_id) -> None:
                await self._send_ack(identity, request_id, ack)

            return Proposal(payload, reply)

    async def _send_ack(self, identity: bytes, request_id: bytes, ack: Ack) -> None:
        with contextlib.suppress(zmq.Again):  # a peer that went away or is full: its ack is dropped
            await self._router.send_multipart([identity, request_id, ack.pack()], zmq.NOBLOCK)

    async def publish(self, payload: bytes) -> None:
        await self._pub.send(payload)  # PUB never blocks: slow subscribers lose records, not us

    async def aclose(self) -> None:
        self._router.close()
        self._pub.close()


class ZmqClient(BusClient):
    """DEALER for proposals plus (optionally) SUB for committed events."""

    def __init__(
        self, ctx: zmq.asyncio.Context, endpoints: BusEndpoints, opts: SocketOptions, *, subscribe: bool = True
    ) -> None:
        self._dealer = _socket(ctx, zmq.DEALER, opts)
        self._dealer.connect(endpoints.propose)
        self._sub: zmq.asyncio.Socket | None = None
        if subscribe:
            self._sub = _socket(ctx, zmq.SUB, opts)
            self._sub.setsockopt(zmq.SUBSCRIBE, b"")
            self._sub.connect(endpoints.publish)
        self._lock = asyncio.Lock()  # one proposal in flight: acks come back in order

    async def propose_payload(self, payload: bytes, timeout_s: float) -> Ack:
        return (await self.propose_payloads([payload], timeout_s))[0]

    async def propose_payloads(self, payloads: Sequence[bytes], timeout_s: float) -> list[Ack]:
        request_ids = [os.urandom(8) for _ in payloads]
        acks: dict[bytes, Ack] = {}
        deadline = time.monotonic() + timeout_s
        async with self._lock:  # one burst in flight per client
            try:
                async with asyncio.timeout(timeout_s):
                    for request_id, payload in zip(request_ids, payloads, strict=True):
                        await self._dealer.send_multipart([request_id, payload])
            except TimeoutError:
                raise BusTimeout(f"could not send within {timeout_s} s (is the coordinator running?)") from None
            wanted = set(request_ids)
            while len(acks) < len(request_ids):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await self._dealer.poll(max(1, int(remaining * 1000))):
                    raise BusTimeout(f"no ack within {timeout_s} s (is the coordinator running?)")
                frames = await self._dealer.recv_multipart(zmq.NOBLOCK)
                if len(frames) == 2 and frames[0] in wanted:
                    acks[frames[0]] = Ack.unpack(frames[1])
                # else: a late ack for an earlier, timed-out proposal: dropped.
        return [acks[r] for r in request_ids]

    async def recv(self, timeout_s: float) -> bytes | None:
        if self._sub is None:
            raise BusError("this client did not subscribe to the feed")
        if not await self._sub.poll(max(0, int(timeout_s * 1000))):
            return None
        return await self._sub.recv(zmq.NOBLOCK)

    async def aclose(self) -> None:
        self._dealer.close()
        if self._sub is not None:
            self._sub.close()


@dataclass(frozen=True, slots=True)
class CurveServer:
    """The worker channel's CURVE identity and the client keys allowed in (Z85 text)."""

    secret_key: bytes
    allow: frozenset[bytes]

    @property
    def public_key(self) -> bytes:
        return zmq.curve_public(self.secret_key)


@dataclass(frozen=True, slots=True)
class CurveClient:
    server_key: bytes  # the server's public key
    public_key: bytes
    secret_key: bytes


# How a local worker gets its CURVE identity: the environment (never argv, which ps shows).
CURVE_ENV = ("SMART_TUNER_CURVE_SERVER_KEY", "SMART_TUNER_CURVE_PUBLIC_KEY", "SMART_TUNER_CURVE_SECRET_KEY")


def curve_server_with_local_client(secret_key: bytes, allow: frozenset[bytes]) -> tuple[CurveServer, CurveClient]:
    """The server for ``secret_key`` (Z85) admitting ``allow`` and one new key pair, returned as a
    client identity for workers started on this machine. Raises BusError for a malformed key."""
    try:
        server_public = zmq.curve_public(secret_key)
    except (zmq.ZMQError, ValueError) as exc:
        raise BusError(f"not a CURVE secret key (Z85, 40 characters): {exc}") from None
    public, secret = zmq.curve_keypair()
    return CurveServer(secret_key, allow | {public}), CurveClient(server_public, public, secret)


class _AllowList:
    """ZAP credentials provider: a client is let in only if its public key is on the list."""

    def __init__(self, allow: frozenset[bytes]) -> None:
        self.allow = allow
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:  # key: the client's public key, Z85
        ok = key in self.allow
        self.refused += not ok
        return ok


class WorkerServer:
    """The supervisor's ROUTER: commands out to workers, their messages and heartbeats in.

    With ``curve`` the channel is encrypted (CURVE) and a ZAP authenticator admits only the
    client keys in ``curve.allow``: no key, no entry (pyzmq's CURVE alone would take any key).
    """

    def __init__(
        self, ctx: zmq.asyncio.Context, endpoint: str, opts: SocketOptions, curve: CurveServer | None = None
    ) -> None:
        self._auth: object | None = None
        self.allow_list: _AllowList | None = None
        self._router = _socket(ctx, zmq.ROUTER, opts)
        if curve is not None:
            from zmq.auth.asyncio import AsyncioAuthenticator

            auth = AsyncioAuthenticator(ctx)
            auth.start()
            self.allow_list = _AllowList(curve.allow)
            auth.configure_curve_callback("*", credentials_provider=self.allow_list)
            self._auth = auth
            self._router.curve_secretkey = curve.secret_key
            self._router.curve_publickey = curve.public_key
            self._router.curve_server = True
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to an unknown worker raises, not drops
        self.endpoint = _bind(self._router, endpoint)
        self.last_seen: dict[bytes, float] = {}

    async def recv(self, timeout_s: float) -> tuple[bytes, bytes] | None:
        """``(worker_id, payload)`` of the next message, or None after ``timeout_s``."""
        if not await self._router.poll(max(0, int(timeout_s * 1000))):
            return None
        frames = await self._router.recv_multipart(zmq.NOBLOCK)
        if len(frames) != 2:
            return None
        self.last_seen[frames[0]] = time.monotonic()
        return frames[0], frames[1]

    async def send(self, worker_id: bytes, payload: bytes) -> None:
        try:
            await self._router.send_multipart([worker_id, payload], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            raise BusError(f"worker {worker_id.decode(errors='replace')} is not connected ({exc})") from None

    def silent_for(self, worker_id: bytes) -> float:
        """Seconds since ``worker_id`` was last heard (inf if never)."""
        seen = self.last_seen.get(worker_id)
        return float("inf") if seen is None else time.monotonic() - seen

    async def aclose(self) -> None:
        self._router.close()
        if self._auth is not None:
            self._auth.stop()  # type: ignore[attr-defined]
            self._auth = None


class WorkerConnection:
    """A worker's DEALER to the supervisor (``curve``: over an encrypted, authenticated channel)."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        worker_id: str,
        opts: SocketOptions,
        curve: CurveClient | None = None,
    ) -> None:
        self._dealer = _socket(ctx, zmq.DEALER, opts)
        self._dealer.setsockopt(zmq.ROUTING_ID, worker_id.encode())
        if curve is not None:
            self._dealer.curve_serverkey = curve.server_key
            self._dealer.curve_publickey = curve.public_key
            self._dealer.curve_secretkey = curve.secret_key
        self._dealer.connect(endpoint)

    async def send(self, payload: bytes, timeout_s: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._dealer.send(payload)
        except TimeoutError:
            raise BusTimeout(f"supervisor did not take a message within {timeout_s} s") from None

    async def recv(self, timeout_s: float) -> bytes | None:
        if not await self._dealer.poll(max(0, int(timeout_s * 1000))):
            return None
        return await self._dealer.recv(zmq.NOBLOCK)

    async def aclose(self) -> None:
        self._dealer.close()


def write_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """A new CURVE key pair as ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600), in
    pyzmq's certificate format. The secret file is created 0600 (pyzmq's own writer makes it
    0644 first); existing files are never overwritten."""
    public, secret = zmq.curve_keypair()
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / f"{name}.key", directory / f"{name}.key_secret")
    for path in paths:  # both or neither: a public key without its secret would be a trap
        if path.exists():
            raise FileExistsError(17, "exists", str(path))
    for path, mode, with_secret in ((paths[0], 0o644, False), (paths[1], 0o600, True)):
        lines = [
            "#   ZeroMQ CURVE " + ("**Secret** " if with_secret else "Public ") + "Certificate",
            "#   Written by run_tuner.py keys" + (": keep it private (mode 0600)" if with_secret else ""),
            "",
            "metadata",
            "curve",
            f'    public-key = "{public.decode()}"',
        ]
        if with_secret:
            lines.append(f'    secret-key = "{secret.decode()}"')
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(path, mode)  # whatever the umask
    return paths


def curve_public(secret_key: str) -> str:
    """The Z85 public key of a Z85 CURVE secret key."""
    return zmq.curve_public(secret_key.encode()).decode()


def load_keypair(path: Path) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` (Z85) from a certificate file (secret is None in a public one)."""
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise BusError(f"{path}: not a CURVE certificate ({exc})") from None
    if public is None:
        raise BusError(f"{path}: no public-key line")
    return public, secret


def new_context() -> zmq.asyncio.Context:
    """The process's one zmq context (create it in main, pass it down, ``term`` it at exit)."""
    return zmq.asyncio.Context()
