"""The sequencer: the journal's host and the only writer of the event log.

Consumes: proposals (encoded envelopes with ``seq == 0``) from the bus.
Emits: committed events on the live feed; acks to proposers; the projections
``tuner_state.yaml`` and snapshots; ``ProtocolViolation`` events that count
refused input.

For each group of pending proposals it validates every proposal (schema, an
event and not a command, not a duplicate id, and a valid transition of the
current state), assigns gapless seqs, appends the group with one fsync in a
worker thread, and only then acks and publishes. A proposal that fails any
check is answered with the reason and takes no seq. A failed append is fatal:
nothing of that group was acknowledged and the run stops.

Imports asyncio, ``protocol``, ``state`` and the bus base only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..protocol import Envelope, Message, ProtocolError, decode, encode
from ..protocol import messages as m
from ..state import projection
from ..state.fold import Folder
from ..state.journal import Journal
from ..state.model import TunerState
from ..state.reducers import ReducerError
from ..state.snapshot import write_snapshot
from .bus import Ack, Proposal, SequencerPort

log = structlog.get_logger("sequencer")

DEDUP_WINDOW = 100_000  # ids of recently committed proposals: a retried proposal gets its first seq back
VIOLATION_REPORT_S = 1.0  # refused input is journaled as one ProtocolViolation per second at most


@dataclass(frozen=True, slots=True)
class SequencerSettings:
    group_commit_max: int = 4096
    state_write_interval_s: float = 1.0
    snapshot_every: int = 10_000
    state_path: Path | None = None  # tuner_state.yaml; None: no projection (unit tests)
    snapshot_dir: Path | None = None


@dataclass
class _Pending:
    env: Envelope
    reply: Callable[[Ack], object]


class Sequencer:
    """Commits proposals to the journal in groups and publishes them."""

    def __init__(self, journal: Journal, port: SequencerPort, state: TunerState, settings: SequencerSettings) -> None:
        if state.last_seq != journal.last_seq:
            raise ValueError(f"state is at seq {state.last_seq} but the journal at {journal.last_seq}")
        self.journal = journal
        self.port = port
        self.state = state
        self.settings = settings
        self.ready = asyncio.Event()
        self._queue: asyncio.Queue[Proposal] = asyncio.Queue(settings.group_commit_max)
        self._recent_ids: OrderedDict[str, int] = OrderedDict()
        self._pending_violations = 0  # refused since the last ProtocolViolation event
        self._violation_sample = ""
        self._violations_reported_at = 0.0
        self._violations_logged_at = 0.0
        self._last_state_write = 0.0
        self._last_snapshot_seq = state.last_seq
        self._commit_listeners: list[Callable[[Envelope], None]] = []
        self._stopping = False
        self.violation_count = 0  # malformed proposals
        self.refused_transitions = 0  # well-formed proposals the state did not allow
        self.groups_committed = 0  # one write + one fsync each
        self.events_committed = 0

    def on_commit(self, listener: Callable[[Envelope], None]) -> None:
        """Call ``listener(env)`` in the loop after each event is committed (for the coordinator)."""
        self._commit_listeners.append(listener)

    async def run(self) -> None:
        """Receive and commit until ``stop()``; then commit what is queued and write the final state."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive())
            self.ready.set()
            await self._commit_loop()

    def stop(self) -> None:
        self._stopping = True

    async def propose_local(self, message: Message, *, actor: str, corr: str | None = None) -> int:
        """Commit ``message`` from inside the coordinator process (no socket round trip)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Ack] = loop.create_future()

        async def reply(ack: Ack) -> None:
            if not done.done():
                done.set_result(ack)

        await self._queue.put(Proposal(encode(Envelope.new(message, actor=actor, corr=corr)), reply))
        ack = await done
        if not ack.ok:
            raise ReducerError(ack.error)
        return ack.seq

    # --- receiving -----------------------------------------------------------------

    async def _receive(self) -> None:
        while not self._stopping:
            proposal = await self.port.recv_proposal(0.1)
            if proposal is not None:
                await self._queue.put(proposal)  # bounded: a full queue slows proposers down

    # --- committing ----------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            group = await self._take_group()
            if group:
                await self._commit(group)
            self._maybe_report_violations(force=self._stopping)
            if self._projections_due():
                await asyncio.to_thread(self._write_projections)
            if self._stopping and self._queue.empty():
                break
        await self._final_flush()

    async def _take_group(self) -> list[Proposal]:
        try:
            async with asyncio.timeout(0.1):  # not wait_for: on 3.11 it can swallow a cancellation
                first = await self._queue.get()
        except TimeoutError:
            return []
        # One loop turn before draining: proposers just woken by the previous group's acks
        # get to propose again, so the group (and its one fsync) covers them too.
        await asyncio.sleep(0)
        group = [first]
        while len(group) < self.settings.group_commit_max and not self._queue.empty():
            group.append(self._queue.get_nowait())
        return group

    async def _commit(self, group: list[Proposal]) -> None:
        state = self.state
        accepted: list[tuple[Envelope, bytes, Proposal]] = []
        in_group: dict[str, int] = {}
        retries: list[tuple[Proposal, int]] = []  # same id proposed again: same seq, answered after the commit
        # A burst of metric events touches only `progress`: the folder accumulates it and rebuilds the
        # state once (before the next other event, which may read it), as replay's fold does.
        folder = Folder(state)
        for proposal in group:
            env, error = self._check(proposal.payload)
            if env is None:
                self._refuse(error, malformed=True)
                await proposal.reply(Ack(False, 0, error))
                continue
            seen = self._recent_ids.get(env.id) or in_group.get(env.id)
            if seen:
                retries.append((proposal, seen))
                continue
            env = env.with_seq(folder.last_seq + 1)
            try:
                folder.add(env.seq, env.ts, env.data)
            except ReducerError as exc:  # e.g. a race another actor won: normal, not bad input
                error = f"invalid transition: {exc}"
                self._refuse(error, malformed=False)
                await proposal.reply(Ack(False, 0, error))
                continue
            in_group[env.id] = env.seq
            accepted.append((env, encode(env), proposal))
        state = folder.result()
        if accepted:
            await asyncio.to_thread(self.journal.append, [payload for _, payload, _ in accepted])
            self.state = state
            self.groups_committed += 1
            self.events_committed += len(accepted)
        for env, payload, proposal in accepted:
            self._remember(env.id, env.seq)
            await proposal.reply(Ack(True, env.seq))
            await self.port.publish(payload)
            for listener in self._commit_listeners:
                listener(env)
        for proposal, seq in retries:
            await proposal.reply(Ack(True, seq))

    def _check(self, payload: bytes) -> tuple[Envelope | None, str]:
        try:
            env = decode(payload)
        except ProtocolError as exc:
            return None, f"malformed: {exc}"
        if env.data.KIND != "event":
            return None, f"{env.type} is a command; only events are journaled"
        if env.seq != 0:
            return None, f"a proposal must have seq 0, got {env.seq}"
        return env, ""

    def _remember(self, event_id: str, seq: int) -> None:
        self._recent_ids[event_id] = seq
        if len(self._recent_ids) > DEDUP_WINDOW:
            self._recent_ids.popitem(last=False)

    def _refuse(self, error: str, *, malformed: bool) -> None:
        """Count malformed input as a protocol violation (journaled); refused transitions are only logged."""
        if malformed:
            self.violation_count += 1
            self._pending_violations += 1
            if not self._violation_sample:
                self._violation_sample = error
        else:
            self.refused_transitions += 1
        now = time.monotonic()
        # A flood of bad input must not become a flood of log lines: one line per second at most.
        if now - self._violations_logged_at >= VIOLATION_REPORT_S:
            self._violations_logged_at = now
            log.warning(
                "proposal refused",
                error=error,
                malformed_total=self.violation_count,
                refused_transitions=self.refused_transitions,
            )

    def _maybe_report_violations(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._pending_violations or (not force and now - self._violations_reported_at < VIOLATION_REPORT_S):
            return
        if self.state.run is None:
            return  # nothing to attach it to yet; the count keeps growing
        count, sample = self._pending_violations, self._violation_sample
        self._pending_violations, self._violation_sample = 0, ""
        self._violations_reported_at = now
        env = Envelope.new(m.ProtocolViolation(where="proposals", error=sample[:500], count=count), actor="sequencer")

        async def ignore(ack: Ack) -> None:
            return None

        with contextlib.suppress(asyncio.QueueFull):  # busy with real work: the next round reports
            self._queue.put_nowait(Proposal(encode(env), ignore))

    # --- projections -----------------------------------------------------------------

    def _projections_due(self) -> bool:
        s = self.settings
        yaml_due = s.state_path is not None and time.monotonic() - self._last_state_write >= s.state_write_interval_s
        snap_due = s.snapshot_dir is not None and self.state.last_seq - self._last_snapshot_seq >= s.snapshot_every
        return yaml_due or snap_due

    def _write_projections(self) -> None:
        """Write tuner_state.yaml and, when due, a snapshot (runs in a worker thread: the state is immutable)."""
        s, state = self.settings, self.state
        self._last_state_write = time.monotonic()
        if s.state_path is not None:
            projection.write_atomic(s.state_path, projection.render(state))
        new_events = state.last_seq - self._last_snapshot_seq
        if s.snapshot_dir is not None and new_events > 0 and (new_events >= s.snapshot_every or self._stopping):
            offset_of = getattr(self.journal, "offset_of", None)  # a file journal: where the next record starts
            offset = offset_of(state.last_seq + 1) if offset_of is not None else None
            write_snapshot(s.snapshot_dir, state, offset)
            self._last_snapshot_seq = state.last_seq

    async def _final_flush(self) -> None:
        await asyncio.to_thread(self._write_projections)
        log.info("journal flushed", last_seq=self.state.last_seq)
