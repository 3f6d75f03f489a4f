"""The actor runtime: a testable core in a thin async shell, under supervision.

* ``ActorCore`` is the decision logic: ``react(env, state)`` returns the
  messages to propose in answer to one committed event, given the tuner state
  folded up to and including it; ``resume(state)`` returns the decisions that
  are due but missing from the log after a (re)start. Cores do no I/O.
* ``ActorShell`` runs one core: *setup* (core hook), *catch-up* (folds the log
  from its start state up to the head it found at start, proposing nothing:
  those decisions are already on record), *resume*, then signals *ready* (an ``ActorReady`` event)
  and *runs* on the live, gapless stream; *teardown* always runs.
  An event at or below the head found at start is never reacted to again,
  also after a crash: what is still due must be re-derived by ``resume`` from
  the state. So an event that crashed an actor cannot crash-loop it, while a
  decision that keeps failing (a deterministic bug in ``resume``) exhausts the
  restart budget and stops the run.
* ``supervise`` restarts a crashed shell (with backoff) and reports each crash
  as ``ActorCrashed``; more than ``max_restarts`` in ``window_s`` and it gives
  up: reports ``gave_up=True`` and calls ``on_give_up`` so that the run stops
  cleanly.

Imports asyncio, ``protocol``, ``state`` and the bus only.
"""

from __future__ import annotations

import abc
import asyncio
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import structlog

from ..protocol import Envelope, Message, decode
from ..protocol import messages as m
from ..state.model import TunerState
from ..state.reducers import apply
from .bus import BusClient, BusError, ProposalRejected, StreamStats, committed_events

log = structlog.get_logger("runtime")


@dataclass(frozen=True, slots=True)
class Out:
    """A message an actor wants to propose; ``corr`` defaults to its cause's."""

    message: Message
    corr: str | None = None


class ActorCore(abc.ABC):
    """Decision logic of one actor. Each subclass's docstring lists what it consumes and emits."""

    name: ClassVar[str]
    # A core with a projection of its own (``observe``) must see the log from seq 1 on every start.
    replays_history: ClassVar[bool] = False
    # A core that reports on the run (projections, alerts) must see its last events: at
    # teardown the shell reads what was committed after the last event it received and
    # hands each to ``observe`` and ``react`` (whose proposals are dropped: the run is over).
    follows_tail: ClassVar[bool] = False
    # The highest seq of this actor's own proposals so far (set by the shell): a core that
    # decides from the state waits until the state has caught up with its own decisions.
    proposed_seq: int = 0

    def observe(self, env: Envelope) -> None:  # noqa: B027 - optional hook
        """Fold ``env`` into a projection of the core's own (a metric store); every event, catch-up too."""

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        """Messages to propose after the committed ``env`` (``state`` includes it)."""
        return ()

    def resume(self, state: TunerState) -> Sequence[Out]:
        """Messages that are due in ``state`` but were never committed (called once per start)."""
        return ()

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (ports, files). Called before catch-up."""

    async def teardown(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Always called, also after a crash or cancellation."""


class HeadReader(Protocol):
    """What a shell needs of the journal: the committed head and re-reads."""

    @property
    def last_seq(self) -> int: ...

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]: ...


class ActorShell:
    """Runs one core against the bus."""

    def __init__(
        self,
        core: ActorCore,
        client: BusClient,
        journal: HeadReader,
        *,
        start: TunerState | None = None,
        propose_timeout_s: float = 10.0,
        poll_s: float = 0.5,
    ) -> None:
        self.core = core
        self.client = client
        self.journal = journal
        self.propose_timeout_s = propose_timeout_s
        self.poll_s = poll_s
        self.phase = "new"
        self.stats = StreamStats()
        # Where to start: a state someone already folded (the sequencer's, in the
        # coordinator), so a (re)start does not re-read the whole log.
        self.state = start if start is not None else TunerState()

    async def run(self, on_ready: Callable[[], None]) -> None:
        try:
            self.phase = "setup"
            await self.core.setup()
            self.phase = "catch-up"
            head = self.journal.last_seq
            if self.state.last_seq >= head:
                await self._become_ready(on_ready)
            stream = committed_events(
                self.client, self.journal, self.state.last_seq + 1, poll_s=self.poll_s, stats=self.stats
            )
            async for env in stream:
                self.state = apply(self.state, env)
                self.core.observe(env)
                if self.phase == "catch-up":
                    if env.seq >= head:
                        await self._become_ready(on_ready)
                    continue
                await self._propose(self.core.react(env, self.state), env)
        finally:
            if self.core.follows_tail and self.phase == "running":
                self._read_tail()
            self.phase = "teardown"
            await self.core.teardown()

    def _read_tail(self) -> None:
        """The events committed after the last one received (the run's end may not have reached us)."""
        try:
            for _, payload in self.journal.read(self.state.last_seq + 1):
                env = decode(payload)
                self.state = apply(self.state, env)
                self.core.observe(env)
                self.core.react(env, self.state)
        except Exception as exc:  # a damaged tail is the journal's business; a report on it is best effort
            log.warning("could not read the journal's tail at teardown", actor=self.core.name, error=repr(exc))

    async def _become_ready(self, on_ready: Callable[[], None]) -> None:
        await self._propose(self.core.resume(self.state), None)
        await self._propose([Out(m.ActorReady(actor=self.core.name))], None)
        self.phase = "running"
        on_ready()

    async def _propose(self, outs: Sequence[Out], cause: Envelope | None) -> None:
        for out in outs:
            corr = out.corr if out.corr is not None else (cause.corr if cause else None)
            env = Envelope.new(out.message, actor=self.core.name, corr=corr, cause=cause.id if cause else None)
            try:
                seq = await self.client.propose(env, self.propose_timeout_s)
                self.core.proposed_seq = max(self.core.proposed_seq, seq)
            except ProposalRejected as exc:
                # Usually a race another actor won (e.g. two stop decisions); the log stays consistent.
                log.warning("proposal refused", actor=self.core.name, error=str(exc))


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    max_restarts: int = 3
    window_s: float = 60.0
    backoff_s: float = 0.2  # doubled after each restart in the window


async def supervise(
    name: str,
    make_shell: Callable[[], ActorShell],
    on_ready: Callable[[], None],
    report: Callable[[m.ActorCrashed], Awaitable[None]],
    on_give_up: Callable[[str], None],
    policy: RestartPolicy = RestartPolicy(),
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``make_shell()`` until cancelled, restarting it after crashes within ``policy``."""
    crashes: deque[float] = deque()
    while True:
        shell = make_shell()
        try:
            await shell.run(on_ready)
            return
        except Exception as exc:  # the actor's loop boundary: log, report, restart or give up
            now = clock()
            crashes.append(now)
            while crashes and now - crashes[0] > policy.window_s:
                crashes.popleft()
            gave_up = len(crashes) > policy.max_restarts
            log.error(
                "actor crashed",
                actor=name,
                error=repr(exc),
                restarts=len(crashes),
                gave_up=gave_up,
                phase=shell.phase,
                exc_info=True,
            )
            event = m.ActorCrashed(
                actor=name,
                error=repr(exc)[:500],
                restarts=len(crashes),
                gave_up=gave_up,
                traceback=traceback.format_exc()[-4000:],
            )
            try:
                await report(event)
            except BusError as bus_exc:
                log.error("could not record the crash", actor=name, error=str(bus_exc))
            if gave_up:
                on_give_up(f"actor {name} crashed {len(crashes)} times within {policy.window_s:g} s: {exc!r}")
                return
            await asyncio.sleep(policy.backoff_s * 2 ** (len(crashes) - 1))
