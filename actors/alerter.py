"""The alerter: tells people what happened, on the console always and through Apprise channels.

    Alerter(AlertChannels(urls, min_severity="warning", rate_limit_per_min=20))

Consumes: RunStarted, RunFinished, ChampionPromoted (promotions only, at most one per
``CHAMPION_EVERY_S``), GuardTripped, WorkerLost, StopDecided.
Emits: ``AlertSent`` for each delivery to a channel (``ok`` or the error's kind; the
channel is named by its URL scheme only, e.g. ``slack``, so a token never reaches the log).

Channels are Apprise URLs (Slack, Telegram, Discord, e-mail and ~100 more), given
already expanded from the environment (``${SLACK_WEBHOOK_URL}``); the expanded URLs live
in memory only. Delivery never blocks the run: alerts wait in a bounded queue (the
oldest is dropped when it is full), each channel is tried in a thread with a deadline,
failures are retried with exponential backoff, the same ``dedup_key`` within
``DEDUP_S`` is sent once, and no more than ``rate_limit_per_min`` alerts go out per
minute. The console (the structured log) sees every alert, whatever the filters.

Imports asyncio, ``protocol``, ``state`` and the actors package; Apprise lazily, in the
delivery thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from ..protocol import Envelope, encode
from ..protocol import messages as m
from ..state.model import TunerState
from .bus import BusClient
from .runtime import ActorCore, Out

log = structlog.get_logger("alerter")

SEVERITIES = ("info", "warning", "error", "critical")
QUEUE_LIMIT = 100  # alerts waiting for delivery; a burst beyond this is news no one can read anyway
DEDUP_S = 300.0
CHAMPION_EVERY_S = 600.0
SEND_TIMEOUT_S = 15.0
RETRIES = 3
BACKOFF_S = 1.0


@dataclass(frozen=True, slots=True)
class Alert:
    severity: m.Severity
    title: str
    body: str
    dedup_key: str


Send = Callable[[str, Alert], Awaitable[None]]  # raises on failure


def alert_for(env: Envelope, state: TunerState) -> Alert | None:
    """The alert an event deserves, if any (pure: tested on its own)."""
    e = env.data
    run = state.run.run_id if state.run else "?"
    if isinstance(e, m.RunStarted):
        return Alert(
            "info", f"Smart Tuner run {e.run_id} started", f"strategy {e.strategy} on {e.host}", f"start:{e.run_id}:0"
        )
    if isinstance(e, m.RunFinished):
        sev: m.Severity = "error" if e.status == "failed" else "info"
        champ = e.summary.get("champion_objective")
        body = e.reason + (f"; champion objective {champ:.4f}" if isinstance(champ, float) else "")
        return Alert(sev, f"Run {run} finished: {e.status}", body, f"finish:{run}:{env.seq}")
    if isinstance(e, m.ChampionPromoted) and not e.kept:
        return Alert("info", f"Run {run}: new champion at step {e.step}", e.reason, "champion")
    if isinstance(e, m.GuardTripped):
        return Alert(
            "warning",
            f"Run {run}: guard {e.guard} tripped",
            f"{e.reason}; action: {e.action}",
            f"guard:{e.guard}:{e.segment_id}",
        )
    if isinstance(e, m.WorkerLost):
        return Alert("warning", f"Run {run}: worker {e.worker_id} lost", e.reason, f"lost:{e.worker_id}")
    if isinstance(e, m.StopDecided):
        sev = "error" if e.rule in ("fatal_error", "actor_failure") else "info"
        return Alert(sev, f"Run {run}: stop decided ({e.rule})", e.reason, f"stop:{run}:{env.seq}")
    return None


async def apprise_send(url: str, alert: Alert) -> None:
    """Deliver through Apprise in a thread; raises ``RuntimeError`` (never naming the URL) on failure."""

    def notify() -> bool:
        import logging

        import apprise

        logging.getLogger("apprise").setLevel(logging.CRITICAL)  # its messages may quote the URL, tokens and all
        ap = apprise.Apprise()
        if not ap.add(url):
            raise RuntimeError("invalid Apprise URL")
        kinds = {"info": "info", "warning": "warning", "error": "failure", "critical": "failure"}
        return bool(ap.notify(title=alert.title, body=alert.body, notify_type=kinds[alert.severity]))

    if not await asyncio.to_thread(notify):
        raise RuntimeError("delivery failed")


def channel_name(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "apprise"


class AlertChannels:
    """The delivery side: queue, filters, retries; ``deliver`` proposes one AlertSent per channel try."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        min_severity: str = "info",
        rate_limit_per_min: int = 20,
        send: Send = apprise_send,
        clock: Callable[[], float] = time.monotonic,
        backoff_s: float = BACKOFF_S,
        timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        self.urls = list(urls)
        self.min_rank = SEVERITIES.index(min_severity)
        self.rate = rate_limit_per_min
        self.send, self.clock, self.backoff_s, self.timeout_s = send, clock, backoff_s, timeout_s
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(QUEUE_LIMIT)
        self.sent_at: deque[float] = deque()
        self.last_key: dict[str, float] = {}
        self.dropped = 0
        self.client: BusClient | None = None
        self._task: asyncio.Task[None] | None = None

    def offer(self, alert: Alert) -> None:
        log.log({"info": 20, "warning": 30, "error": 40, "critical": 50}[alert.severity], alert.title, body=alert.body)
        if not self.urls or SEVERITIES.index(alert.severity) < self.min_rank:
            return
        now = self.clock()
        window = CHAMPION_EVERY_S if alert.dedup_key == "champion" else DEDUP_S
        if now - self.last_key.get(alert.dedup_key, -1e18) < window:
            return  # the same news, again
        self.last_key[alert.dedup_key] = now
        if self.queue.full():
            self.queue.get_nowait()
            self.queue.task_done()
            self.dropped += 1
        self.queue.put_nowait(alert)

    async def start(self, client: BusClient) -> None:
        self.client = client
        self._task = asyncio.create_task(self._deliver_all(), name="alerts")  # owned here, cancelled in close

    async def close(self, drain_s: float = 5.0) -> None:
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):  # the run's last alerts (finished) get a moment to leave
            async with asyncio.timeout(drain_s):
                await self.queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _deliver_all(self) -> None:
        while True:
            alert = await self.queue.get()
            try:
                await self._send_one(alert)
            finally:
                self.queue.task_done()

    async def _send_one(self, alert: Alert) -> None:
        now = self.clock()
        while self.sent_at and now - self.sent_at[0] > 60.0:
            self.sent_at.popleft()
        if len(self.sent_at) >= self.rate:
            self.dropped += 1
            log.warning("alert rate limit reached: not sent", title=alert.title, limit_per_min=self.rate)
            return
        self.sent_at.append(now)
        await asyncio.gather(*(self._deliver(url, alert) for url in self.urls))

    async def _deliver(self, url: str, alert: Alert) -> None:
        error: str | None = None
        for attempt in range(RETRIES):
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.send(url, alert)
                error = None
                break
            except TimeoutError:
                error = f"timed out after {self.timeout_s:g} s"
            except Exception as exc:  # any channel failure is recorded, never raised into the run
                error = f"{type(exc).__name__}: {exc}" if isinstance(exc, RuntimeError) else type(exc).__name__
            if attempt < RETRIES - 1:
                await asyncio.sleep(self.backoff_s * 2**attempt)
        sent = m.AlertSent(
            channel=channel_name(url),
            severity=alert.severity,
            title=alert.title[:200],
            dedup_key=alert.dedup_key,
            ok=error is None,
            error=error,
        )
        if self.client is not None:
            ack = await self.client.propose_payload(encode(Envelope.new(sent, actor="alerter")), 10.0)
            if not ack.ok:
                log.warning("AlertSent refused", error=ack.error)


class Alerter(ActorCore):
    name = "alerter"

    follows_tail = True  # the run's last events (finished, stop decided) are the ones people wait for

    def __init__(self, channels: AlertChannels, client: BusClient | None = None) -> None:
        self.channels = channels
        self.client = client

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        alert = alert_for(env, state)
        if alert is not None:
            self.channels.offer(alert)
        return ()

    def resume(self, state: TunerState) -> Sequence[Out]:
        """The run (re)started: the events up to here were caught up with, not announced."""
        if state.run is not None and state.control.phase == "running":
            how = "started" if state.control.resumes == 0 else f"resumed (resume {state.control.resumes})"
            self.channels.offer(
                Alert(
                    "info",
                    f"Smart Tuner run {state.run.run_id} {how}",
                    f"strategy {state.run.strategy} on {state.run.host}",
                    f"start:{state.run.run_id}:{state.control.resumes}",
                )
            )
        return ()

    async def setup(self) -> None:
        if self.client is not None:
            await self.channels.start(self.client)

    async def teardown(self) -> None:
        await self.channels.close()
