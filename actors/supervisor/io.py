"""The supervisor's I/O side: the worker socket, the processes, the device pool, the relay.

    io = SupervisorIO(server, pool, spec, client, run_dir, SupervisorPolicy())
    await io.start()          # its own task: dispatch, inbox (the relay), watchdog
    io.submit(segment)        # from the core: run this segment on a free worker

The core (``core.Supervisor``) hands it segments and stop decisions; everything that
waits or talks happens here. Imports asyncio, ``protocol``, ``state``, the bus, the
scheduler's cadence rule and the supervisor's own modules (never torch).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ...protocol import Envelope, Message, ProtocolError, decode, encode
from ...protocol import messages as m
from ...state.model import Segment
from ..bus import Ack, BusClient, BusError
from ..bus.zmqbus import WorkerServer
from ..scheduler import EVAL_EVERY, report_cadence
from ..watcher.filetail import last_lines
from .devices import DevicePool, Lease
from .launcher import WorkerProcess, WorkerSpec, worker_command

log = structlog.get_logger("supervisor")

_LOCAL_ID = re.compile(r"w\d+")  # the ids this supervisor gives the workers it starts
RELAYED = (m.WorkerHello, m.SegmentStarted, m.HparamsApplied, m.MetricsObserved, m.SegmentFinished, m.SegmentFailed)
ENDS = (m.SegmentFinished, m.SegmentFailed)


@dataclass(frozen=True, slots=True)
class SupervisorPolicy:
    heartbeat_timeout_s: float = 30.0  # a worker silent this long is lost (a step on CPU takes seconds)
    startup_timeout_s: float = 300.0  # building the trainer can synthesise the demo corpus first
    max_attempts: int = 3  # workers a segment may lose before it fails as "lost"
    max_start_failures: int = 3  # workers in a row that die before saying hello: the trainer cannot start
    stop_grace_s: float = 10.0
    # Worker messages taken per wake-up and relayed in one round trip (``propose_payloads``), so a
    # burst of reports lands in one group commit; small enough that a hello behind it waits little.
    # 1 relays one message per awaited fsync (what bench/supervisor_relay.py compares against).
    relay_batch: int = 256


@dataclass
class _Worker:
    worker_id: str
    proc: WorkerProcess | None  # None: a remote worker, started by hand on another host
    lease: Lease | None  # None: a remote worker brings its own device
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    segment: Segment | None = None
    last_seen: float = field(default_factory=time.monotonic)


class SupervisorIO:
    """The supervisor's side effects: processes, the worker socket, relaying to the journal."""

    def __init__(
        self,
        server: WorkerServer,
        pool: DevicePool,
        spec: WorkerSpec,
        client: BusClient,
        run_dir: Path,
        policy: SupervisorPolicy = SupervisorPolicy(),
    ) -> None:
        self.server, self.pool, self.spec, self.client = server, pool, spec, client
        self.run_dir, self.policy = run_dir, policy
        self.pending: deque[Segment] = deque()
        self.attempts: dict[str, int] = {}
        self.workers: dict[str, _Worker] = {}
        self.stopping = False
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()  # fire-and-forget commands, kept until sent
        self.start_failures = 0
        self.prestart = False  # start one worker before any segment: its hello lets the tuner check the space
        self.accept_remote = False  # tcp with CURVE: a worker we did not start may join with its hello
        self.retired: set[str] = set()  # ids of workers gone: one that comes back is not taken again
        self.turned_away: dict[bytes, float] = {}  # routing id -> when it was last told to stop
        # A DDP trial takes spec.ranks GPUs in one lease; on the CPU (one device) its ranks share it.
        self.devices_per_worker = 1 if pool.devices == ("cpu",) else spec.ranks

    # --- from the core (synchronous, never blocks) --------------------------------------

    def submit(self, segment: Segment) -> None:
        busy = {w.segment.segment_id for w in self.workers.values() if w.segment is not None}
        if segment.segment_id not in busy and all(s.segment_id != segment.segment_id for s in self.pending):
            self.pending.append(segment)
            self._wake.set()

    def number_workers_after(self, n: int) -> None:
        self._ids = itertools.count(n + 1)

    def stop_all(self) -> None:
        """A stop was decided: nothing new starts, running segments are aborted."""
        self.stopping = True
        self.pending.clear()
        for w in self.workers.values():
            if w.segment is not None:
                abort = m.AbortSegment(segment_id=w.segment.segment_id, reason="run stopping")
                self._send_soon(w.worker_id.encode(), abort)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="supervisor-io")  # owned here, awaited in close
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*self._sends, return_exceptions=True)  # aborts already on their way
        for w in list(self.workers.values()):
            with contextlib.suppress(BusError):
                await self.server.send(w.worker_id.encode(), _command(m.Shutdown(reason="supervisor closing")))
        await asyncio.gather(*(self._retire(w, reason=None) for w in list(self.workers.values())))

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._inbox())
            tg.create_task(self._dispatch())
            tg.create_task(self._watchdog())

    # --- dispatching -------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.prestart and not self.workers and not self.stopping:
                self.prestart = False
                await self._new_worker()
            while self.pending and not self.stopping:
                worker = next((w for w in self.workers.values() if w.segment is None and w.ready.is_set()), None)
                if worker is None:
                    worker = await self._new_worker()
                    if worker is None:
                        break  # every device is busy: the next segment end wakes us
                    continue  # it says hello first; the inbox wakes us then
                segment = self.pending.popleft()
                worker.segment = segment
                worker.last_seen = time.monotonic()
                self.attempts[segment.segment_id] = self.attempts.get(segment.segment_id, 0) + 1
                await self.server.send(worker.worker_id.encode(), _command(_run_command(segment)))
                log.info("segment sent", segment_id=segment.segment_id, worker_id=worker.worker_id)

    async def _new_worker(self) -> _Worker | None:
        if any(not w.ready.is_set() for w in self.workers.values()):
            return None  # one start at a time: it will take the next segment when ready
        worker_id = f"w{next(self._ids)}"
        lease = self.pool.acquire(worker_id, self.devices_per_worker)
        if lease is None:
            return None
        argv = worker_command(self.spec, self.server.endpoint, worker_id, lease)
        proc = await WorkerProcess.start(argv, lease, self.run_dir / "logs" / f"worker-{worker_id}.log", self.spec.env)
        worker = _Worker(worker_id, proc, lease)
        self.workers[worker_id] = worker
        log.info("worker started", worker_id=worker_id, pid=proc.pid, devices=lease.devices)
        return worker

    # --- what workers say ------------------------------------------------------------------------

    async def _inbox(self) -> None:
        while True:
            item = await self.server.recv(0.5)
            if item is None:
                continue
            batch = [item]
            while len(batch) < self.policy.relay_batch:
                more = await self.server.recv(0)  # only what has already arrived
                if more is None:
                    break
                batch.append(more)
            relayed = [r for r in (self._received(routing_id, payload) for routing_id, payload in batch) if r]
            if not relayed:
                continue
            acks = await self.client.propose_payloads([payload for _, _, payload in relayed], 10.0)
            for (worker, env, _), ack in zip(relayed, acks, strict=True):
                self._relayed(worker, env, ack)

    def _received(self, routing_id: bytes, payload: bytes) -> tuple[_Worker, Envelope, bytes] | None:
        """A worker's message, if it is one to relay to the journal (not a heartbeat, not malformed)."""
        worker = self.workers.get(routing_id.decode(errors="replace"))
        if worker is None:
            worker = self._join(routing_id.decode(errors="replace"), payload)
        if worker is None:  # a worker we retired, still talking, or one that may not join
            self._turn_away(routing_id)
            return None
        worker.last_seen = time.monotonic()
        try:
            env = decode(payload)
        except ProtocolError as exc:
            log.warning("malformed message from a worker", worker_id=worker.worker_id, error=str(exc))
            return None
        if isinstance(env.data, m.Heartbeat) or not isinstance(env.data, RELAYED):
            return None
        return worker, env, payload

    def _relayed(self, worker: _Worker, env: Envelope, ack: Ack) -> None:
        """What follows a relayed message once the journal answered: readiness, a free worker."""
        msg = env.data
        if not ack.ok:
            log.warning("worker event refused", worker_id=worker.worker_id, type=env.type, error=ack.error)
        if isinstance(msg, m.WorkerHello):
            worker.ready.set()
            self.start_failures = 0
            self._wake.set()
        elif isinstance(msg, ENDS) and worker.segment is not None and msg.segment_id == worker.segment.segment_id:
            worker.segment = None
            self._wake.set()

    def _join(self, worker_id: str, payload: bytes) -> _Worker | None:
        """A remote worker (``accept_remote``) says hello: it joins the pool of workers segments go to.
        The allow-list has already vetted its key; an id we use or used for our own is refused."""
        if not self.accept_remote or worker_id in self.retired or _LOCAL_ID.fullmatch(worker_id):
            return None
        try:
            env = decode(payload)
        except ProtocolError:
            return None
        if not isinstance(env.data, m.WorkerHello):
            return None
        worker = _Worker(worker_id, None, None)
        self.workers[worker_id] = worker
        log.info("remote worker joined", worker_id=worker_id, device=env.data.device, pid=env.data.pid)
        return worker

    def _turn_away(self, routing_id: bytes) -> None:
        """A worker this supervisor does not (or no longer) run: tell it to stop, once a few seconds.
        (A remote worker after a coordinator restart is one: it must be started again, hello first.)"""
        now = time.monotonic()
        if now - self.turned_away.get(routing_id, -math.inf) < 5.0:
            return
        self.turned_away[routing_id] = now
        log.info("a worker this run does not use: told to stop", worker_id=routing_id.decode(errors="replace"))
        self._send_soon(routing_id, m.Shutdown(reason="this worker is not (or no longer) part of the run"))

    # --- lost workers ----------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for w in list(self.workers.values()):
                exited = w.proc is not None and w.proc.returncode is not None
                limit = self.policy.heartbeat_timeout_s if w.ready.is_set() else self.policy.startup_timeout_s
                if exited or now - w.last_seen > limit:
                    code = w.proc.returncode if w.proc is not None else None
                    reason = f"exited with code {code}" if exited else f"silent for {now - w.last_seen:.0f} s"
                    await self._lost(w, reason, now - w.last_seen)

    async def _lost(self, worker: _Worker, reason: str, silent_s: float) -> None:
        log.warning("worker lost", worker_id=worker.worker_id, reason=reason)
        segment = worker.segment
        never_started = not worker.ready.is_set()
        await self._retire(worker, reason=reason, silent_s=silent_s)
        if never_started:
            await self._start_failed(worker, reason)
        if segment is None:
            return
        sid = segment.segment_id
        if self.attempts.get(sid, 0) < self.policy.max_attempts and not self.stopping:
            self.pending.appendleft(segment)  # again, same id, same checkpoint
        else:
            why = "the run is stopping" if self.stopping else f"{self.attempts[sid]} workers lost while running it"
            detail = f"{why} (last: {reason})"
            await self._propose(m.SegmentFailed(segment_id=sid, reason="lost", detail=detail))
        self._wake.set()

    async def _start_failed(self, worker: _Worker, reason: str) -> None:
        """A worker died before its hello; after a few in a row, what waits for one fails with its log."""
        self.start_failures += 1
        if self.start_failures < self.policy.max_start_failures:
            return
        tail = last_lines(self.run_dir / "logs" / f"worker-{worker.worker_id}.log", 5)
        detail = f"{self.start_failures} workers in a row died before starting ({reason}); last log lines: {tail}"
        while self.pending:
            await self._propose(
                m.SegmentFailed(segment_id=self.pending.popleft().segment_id, reason="error", detail=detail[:2000])
            )
        self.start_failures = 0

    async def _retire(self, worker: _Worker, reason: str | None, silent_s: float = 0.0) -> None:
        self.workers.pop(worker.worker_id, None)
        self.retired.add(worker.worker_id)
        if worker.proc is not None:
            await worker.proc.stop(self.policy.stop_grace_s)
        else:  # a remote worker: no process of ours to stop; it must not go on training a re-queued segment
            with contextlib.suppress(BusError):
                await self.server.send(worker.worker_id.encode(), _command(m.Shutdown(reason=reason or "retired")))
        if worker.lease is not None:
            self.pool.release(worker.lease)
        if reason is not None and worker.ready.is_set():
            lost = m.WorkerLost(worker_id=worker.worker_id, reason=reason, last_heartbeat_s=round(silent_s, 3))
            await self._propose(lost)
        self._wake.set()

    async def _propose(self, message: Message) -> None:
        ack = await self.client.propose_payload(encode(Envelope.new(message, actor="supervisor")), 10.0)
        if not ack.ok:
            log.warning("proposal refused", type=message.TYPE, error=ack.error)

    def _send_soon(self, routing_id: bytes, message: Message) -> None:
        async def send() -> None:
            with contextlib.suppress(BusError):
                await self.server.send(routing_id, _command(message))

        task = asyncio.get_running_loop().create_task(send())
        self._sends.add(task)  # a task nobody references can be collected before it runs
        task.add_done_callback(self._sends.discard)


def _command(message: Message) -> bytes:
    return encode(Envelope.new(message, actor="supervisor"))


def _run_command(segment: Segment) -> m.RunSegment:
    """The segment as scheduled. A log written before the cadence was recorded gets the scheduler's
    rule for it, as the supervisor applied it then."""
    steps = segment.steps
    report_every = segment.report_every if segment.report_every is not None else report_cadence(steps)
    eval_every = segment.eval_every if segment.eval_every is not None else EVAL_EVERY
    return m.RunSegment(
        segment_id=segment.segment_id,
        from_checkpoint=segment.from_checkpoint,
        from_sha256=segment.from_sha256,
        hparams=dict(segment.hparams),
        steps=steps,
        eval_every=eval_every,
        report_every=report_every,
    )
