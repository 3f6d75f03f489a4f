"""What every worker does with the supervisor, whatever trains: hello, commands, heartbeats, reports.

    class MyWorker(WorkerLoop):
        def hello(self) -> m.WorkerHello: ...
        def progress(self) -> int | None: ...             # the step a heartbeat carries
        async def run_segment(self, cmd: m.RunSegment) -> None: ...   # ends with SegmentFinished/Failed

    await MyWorker(client, heartbeat_s=1.0).run()

``run`` announces the worker (``hello``), then serves: ``RunSegment`` commands queue and
run one after another (``run_segment``), ``AbortSegment`` sets ``abort`` for the running
one (or cancels a queued one), ``Shutdown`` ends the worker after the current segment
stops. A heartbeat goes out every ``heartbeat_s`` seconds whatever a segment does.
Reports go through ``offer`` (thread-safe through ``call_soon_threadsafe``) into a
bounded outbox that one task sends in order; ``flush_reports`` waits until it is empty,
so the message that ends a segment follows everything it reported.

A worker whose supervisor is gone (re-parented: ``--parent-pid``; under torchrun, whose
agent is the parent, the supervisor's pid no longer exists) stops by itself: a killed
coordinator cannot stop workers that live in process groups of their own.

Two workers speak this protocol: ``trainer.worker`` (our trainer, in-process) and
``actors.external.worker`` (a user's own ``train.py``, restarted per segment).

Imports the standard library, ``protocol`` and ``trainer.client`` only (never torch).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import threading

import structlog

from ..protocol import Envelope, Message
from ..protocol import messages as m
from .client import SupervisorClient, SupervisorUnreachable

log = structlog.get_logger("worker")

# Metric reports waiting to be sent: a segment reports every few steps, so 1000 is minutes of
# backlog; past it the oldest report is dropped (the final SegmentFinished never is).
OUTBOX = 1000


class WorkerLoop(abc.ABC):
    def __init__(self, client: SupervisorClient, heartbeat_s: float, parent: int | None) -> None:
        self.client, self.heartbeat_s = client, heartbeat_s
        self.commands: asyncio.Queue[Envelope] = asyncio.Queue(16)  # RunSegments queue here one after another
        self.outbox: asyncio.Queue[Message] = asyncio.Queue(OUTBOX)
        self.abort = threading.Event()
        self.current: str | None = None
        self.cancelled: set[str] = set()  # queued segments aborted before they started
        self.stopping = asyncio.Event()
        self.dropped_reports = 0
        # The supervisor's process, as it was when this process started (building a trainer takes
        # seconds, in which the supervisor may die): if it is gone, so is the reason to train.
        # None: no such process (a worker started by hand on another host; the heartbeats tell).
        self.parent = parent
        # Under torchrun our parent is its agent, which has a session of its own: if the agent dies
        # (SIGKILL), nothing else would stop this rank, so losing it counts as losing the supervisor.
        self.agent = os.getppid() if _under_torchrun() else None
        self.orphaned = False
        self._quit = False  # request_stop: end as a Shutdown would

    # --- what a worker supplies -------------------------------------------------------------

    @abc.abstractmethod
    def hello(self) -> m.WorkerHello: ...

    @abc.abstractmethod
    def progress(self) -> int | None:
        """The step the heartbeat reports (None: not training)."""

    @abc.abstractmethod
    async def run_segment(self, cmd: m.RunSegment) -> None:
        """Train one segment; send SegmentStarted first and SegmentFinished or SegmentFailed last."""

    def request_stop(self) -> None:
        """Stop as on ``Shutdown``: the running segment is aborted, then the worker ends (a signal handler)."""
        self._quit = True
        self.abort.set()

    # --- the protocol ----------------------------------------------------------------------------

    def _supervisor_gone(self) -> bool:
        """Re-parented (our parent was the supervisor), or, under torchrun (whose agent is our parent),
        the supervisor's pid no longer exists."""
        if self.agent is not None and os.getppid() != self.agent:
            return True
        if self.parent is None or os.getppid() == self.parent:
            return False
        try:
            os.kill(self.parent, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # it exists (another user's process would be a reused pid: rare, and harmless here)
        return not _under_torchrun()

    async def run(self) -> None:
        if self._supervisor_gone():
            log.warning("the supervisor's process is gone before the start: not starting", parent=self.parent)
            return
        hello = self.hello()
        await self.client.send(hello)
        log.info("worker ready", worker_id=self.client.worker_id, device=hello.device)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._heartbeats())
            tg.create_task(self._sender())
            tg.create_task(self._segments())
            await self._listen()
            self.stopping.set()

    async def _listen(self) -> None:
        while True:
            env = await self.client.recv_command(0.5)
            if self.orphaned or self._quit:
                if self.orphaned:
                    log.warning("the supervisor's process is gone: stopping", parent=self.parent)
                self.abort.set()
                return
            if env is None:
                continue
            cmd = env.data
            if isinstance(cmd, m.RunSegment):
                try:
                    self.commands.put_nowait(env)
                except asyncio.QueueFull:
                    await self.send(
                        m.SegmentFailed(
                            segment_id=cmd.segment_id,
                            reason="error",
                            detail="worker queue full: too many segments queued",
                        )
                    )
            elif isinstance(cmd, m.AbortSegment):
                log.info("abort requested", segment_id=cmd.segment_id, reason=cmd.reason)
                if cmd.segment_id == self.current:
                    self.abort.set()
                else:
                    self.cancelled.add(cmd.segment_id)
            elif isinstance(cmd, m.Shutdown):
                log.info("shutdown requested", reason=cmd.reason)
                self.abort.set()
                return

    async def _heartbeats(self) -> None:
        while not self.stopping.is_set():
            # A killed coordinator cannot stop its workers (each has a process group of its own);
            # re-parenting tells them, so a resumed run never meets an orphan still training.
            self.orphaned = self._supervisor_gone()
            with contextlib.suppress(SupervisorUnreachable):  # a missed beat is the supervisor's signal, not ours
                beat = m.Heartbeat(worker_id=self.client.worker_id, step=self.progress())
                await self.client.send(beat, timeout_s=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_s):
                    await self.stopping.wait()

    async def _sender(self) -> None:
        """The one task that sends reports, in the order they were made. It outlives a segment still
        winding down after the stop (a script being stopped, its last reports read): that segment's
        ``flush_reports`` waits for it, so leaving first would hang the worker for good."""
        while not (self.stopping.is_set() and self.current is None and self.outbox.empty()):
            try:
                async with asyncio.timeout(0.2):
                    message = await self.outbox.get()
            except TimeoutError:
                continue
            try:
                await self.send(message)
            finally:
                self.outbox.task_done()

    async def send(self, message: Message) -> None:
        await self.client.send(message)

    def offer(self, message: Message) -> None:
        """Queue a report (from another thread: through ``loop.call_soon_threadsafe``)."""
        if self.outbox.full():
            self.outbox.get_nowait()
            self.outbox.task_done()
            self.dropped_reports += 1
        self.outbox.put_nowait(message)

    async def flush_reports(self) -> None:
        """Send what the segment reported before the message that ends it (order matters to readers)."""
        await asyncio.sleep(0)  # let a thread's last call_soon_threadsafe callbacks run
        await self.outbox.join()  # the sender has sent every report, in order

    async def _segments(self) -> None:
        while not self.stopping.is_set():
            try:
                async with asyncio.timeout(0.2):
                    env = await self.commands.get()
            except TimeoutError:
                continue
            cmd: m.RunSegment = env.data  # type: ignore[assignment]
            if cmd.segment_id in self.cancelled:
                self.cancelled.discard(cmd.segment_id)
                await self.send(
                    m.SegmentFailed(segment_id=cmd.segment_id, reason="aborted", detail="aborted before it started")
                )
                continue
            self.current = cmd.segment_id
            self.abort.clear()
            try:
                await self.run_segment(cmd)
            finally:
                self.current = None


def _under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def device_label(device: str, count: int) -> str:
    """What a worker announces as its device: ``cuda:0``, or ``cuda:0 x2`` for a trial on two GPUs
    (the stop controller's GPU-hour budget counts the multiplier)."""
    return device if count <= 1 else f"{device} x{count}"
