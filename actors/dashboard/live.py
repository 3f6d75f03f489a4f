"""A run as the dashboard sees it: the state folded so far, followed live from the log, fanned
out to every attached browser.

    live = LiveRun(run_dir)
    await live.start()           # the latest snapshot plus the log's tail: the first screen
    live.state                   # the folded state at live.head
    with live.attached():        # while a browser streams: recent events are kept as JSON
        batch = live.after(seq) # the events after ``seq`` still in the ring (None: ask the log)
        await live.wait(15.0)   # until more are committed
    async for seq, doc in live.catch_up(after, upto): ...

It only ever reads the log (``JournalFollower``: complete, valid records, never the write
lock), so any number of dashboards and browsers cost the sequencer nothing but CPU. One
follower per dashboard feeds every stream through one ring of the latest events (each
encoded once, whatever the number of browsers); a browser that fell behind the ring catches
up from the log, so a stream has no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from ...protocol import Envelope
from ...protocol import messages as m
from ...protocol.codec import ENVELOPE_LEN, unpack
from ...protocol.envelope import ENVELOPE_VERSION
from ...protocol.metrics import GRAD_NORM, TRAIN_LOSS
from ...state import history, timeline
from ...state.fold import Folder
from ...state.journal import FileJournal, JournalError, JournalFollower
from ...state.model import TunerState
from ...state.reducers import ReducerError
from ...state.snapshot import latest_snapshot_at
from ..rundir import RunPaths
from .views import redact

_METRICS, _METRICS_TV = m.MetricsObserved.TYPE, m.MetricsObserved.TV


def event_json(env: Envelope) -> str:
    """An event as the browser gets it: ``timeline.to_json`` with every secret blanked."""
    doc = timeline.to_json(env)
    if env.type == _METRICS:
        return doc  # numbers only, and most of a log: not worth a second pass
    data = json.loads(doc)
    data["data"] = redact(data["data"])
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def raw_metrics(seq: int, frame: Any) -> dict[str, Any] | None:
    """A current-version ``MetricsObserved`` record's data map, as ``history.committed`` reads it
    (None for anything else: that takes the full decoder)."""
    if type(frame) is not tuple or len(frame) != ENVELOPE_LEN or frame[0] != ENVELOPE_VERSION or frame[1] != seq:
        return None
    data = frame[9]
    if frame[4] != _METRICS or frame[5] != _METRICS_TV or type(data) is not dict:
        return None
    if type(data.get("step")) is not int or type(data.get("metrics")) is not dict:
        return None
    return data


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def metrics_json(frame: Any) -> str:
    """``event_json`` of a metrics record from its raw frame: the same text, without building the message."""
    data = frame[9]
    doc = {
        "seq": frame[1],
        "id": frame[2],
        "ts": frame[3],
        "type": frame[4],
        "tv": frame[5],
        "actor": frame[6],
        "corr": frame[7],
        "cause": frame[8],
        "data": {**data, "metrics": {k: _finite(v) for k, v in data["metrics"].items()}},
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


class LiveRun:
    def __init__(self, run_dir: Path, *, poll_s: float = 0.25, ring: int = 50000) -> None:
        self.paths = RunPaths(run_dir)
        self.poll_s = poll_s
        self.ring_size = ring
        self._folder = Folder(TunerState())
        self._attached = 0  # streams open now: only then are events encoded into the ring
        self._ring: list[tuple[int, str]] = []  # the latest events, consecutive seqs, as the browser gets them
        self._wake = asyncio.Event()
        self._ids: dict[str, int] = {}  # event id -> seq (every event but the metric stream)
        self._corr: dict[str, list[int]] = {}  # correlation id -> seqs, the same
        self._indexed_to = 0
        self._reader: JournalFollower | None = None  # random access: keeps a sparse index of offsets
        self._position: tuple[int, int, list[int]] = (1, 0, [])
        self._tasks: list[asyncio.Task[None]] = []
        self.error: str | None = None  # why following stopped, if it did
        self.at: dict[str, tuple[int, float | None]] = {}  # running segment -> its last reported step and loss
        # segment -> its last training report's metrics (gradient norm, loss): the state keeps none per segment
        self.train_last: dict[str, dict[str, float]] = {}
        self.changed = asyncio.Event()

    # --- the state --------------------------------------------------------------------------

    def load(self) -> None:
        """The first screen: the latest snapshot and the log after it, not a replay from seq 1.

        A snapshot that records where its next record starts in the log is continued from there
        (the log before it is not read: verifying it is ``replay --verify``'s job); otherwise,
        or if that record is not where the snapshot says, the log is opened and recovered whole."""
        if self._load_after_snapshot():
            return
        journal = FileJournal.open_readonly(self.paths.journal)
        try:
            state = history.load(journal, snapshots=self.paths.snapshots)
            self._position = journal.position()  # followers start here, not at the log's first byte
        finally:
            journal.close()
        self._folder = Folder(state)

    def _load_after_snapshot(self) -> bool:
        found = latest_snapshot_at(self.paths.snapshots)
        if found is None:
            return False
        state, offset = found
        if offset is None:
            return False
        folder = Folder(state)
        follower = JournalFollower.resume(self.paths.journal, (state.last_seq + 1, offset, []))
        read = 0
        try:
            while batch := follower.poll(4096):
                for seq, payload in batch:
                    env = history.decode_record(seq, payload)  # the first one must be record last_seq + 1
                    folder.add(env.seq, env.ts, env.data)
                read += len(batch)
            position = follower.position()
            if not read and position[1] != self.paths.journal.stat().st_size:
                return False  # nothing readable where the snapshot points, yet the log goes on: not a boundary
        except (JournalError, ReducerError, OSError):
            return False
        finally:
            follower.close()
        self._folder, self._position = folder, position
        return True

    @property
    def state(self) -> TunerState:
        return self._folder.result()

    @property
    def head(self) -> int:
        return self._folder.last_seq

    async def start(self) -> None:
        self.load()
        self._tasks = [
            asyncio.create_task(self._follow(), name="dashboard-follow"),
            asyncio.create_task(self._index_history(), name="dashboard-index"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _records(self, from_seq: int, n: int) -> list[tuple[int, bytes]]:
        """Up to ``n`` committed records from ``from_seq`` on. Synchronous (seek and poll with no await
        between them), so every reader on the loop can share one follower and its offsets."""
        if self._reader is None:
            self._reader = JournalFollower.resume(self.paths.journal, self._position)
        self._reader.seek(from_seq)
        return self._reader.poll(n)

    async def _follow(self) -> None:
        follower = JournalFollower.resume(self.paths.journal, self._position)
        try:
            while True:
                batch = follower.poll(4096)
                if not batch:
                    await asyncio.sleep(self.poll_s)
                    continue
                for seq, payload in batch:
                    frame = unpack(payload)
                    data = raw_metrics(seq, frame)
                    if data is not None:  # most of a log: folded and encoded from the raw frame
                        self._folder.add(seq, frame[3], data)
                        segment, metrics = data.get("segment_id"), data["metrics"]
                        if isinstance(segment, str):
                            self.at[segment] = (data["step"], metrics.get(TRAIN_LOSS))
                            self._train(segment, metrics)
                        if self._attached:
                            self._publish(seq, metrics_json(frame))
                        continue
                    env = history.decode_record(seq, payload)
                    self._folder.add(env.seq, env.ts, env.data)
                    self._index(env.seq, env.id, env.corr, env.type)
                    self._track(env)
                    if self._attached:
                        self._publish(env.seq, event_json(env))
                self.changed.set()
                self.changed = asyncio.Event()
                self._wake.set()
                self._wake = asyncio.Event()
                await asyncio.sleep(0)
        except JournalError as exc:
            self.error = f"following the log stopped: {exc}"
        finally:
            follower.close()

    def _track(self, env: Envelope) -> None:
        data = env.data
        if isinstance(data, m.MetricsObserved) and data.segment_id is not None:
            self.at[data.segment_id] = (data.step, data.metrics.get(TRAIN_LOSS))
            self._train(data.segment_id, data.metrics)
        elif isinstance(data, (m.SegmentFinished, m.SegmentFailed)):
            self.at.pop(data.segment_id, None)

    def _train(self, segment_id: str, metrics: Mapping[str, Any]) -> None:
        if GRAD_NORM in metrics or TRAIN_LOSS in metrics:
            kept = self.train_last.setdefault(segment_id, {})
            for key in (GRAD_NORM, TRAIN_LOSS):
                value = metrics.get(key)
                if isinstance(value, (int, float)):
                    kept[key] = float(value)

    def _publish(self, seq: int, doc: str) -> None:
        if self._ring and self._ring[-1][0] != seq - 1:
            self._ring.clear()  # not consecutive (nobody was attached meanwhile): the log has the rest
        self._ring.append((seq, doc))
        if len(self._ring) > 2 * self.ring_size:
            del self._ring[: len(self._ring) - self.ring_size]

    # --- the index of causes ----------------------------------------------------------------

    def _index(self, seq: int, event_id: str, corr: str | None, kind: str) -> None:
        if kind == _METRICS:
            return
        self._ids[event_id] = seq
        if corr:
            self._corr.setdefault(corr, []).append(seq)

    async def _index_history(self) -> None:
        """Event ids and correlations of the log before the first screen, in the background."""
        upto, nxt = self.head, 1
        try:
            while nxt <= upto:
                batch = self._records(nxt, 4096)
                if not batch:
                    break
                for seq, payload in batch:
                    if seq > upto:
                        break
                    frame = unpack(payload)
                    if type(frame) in (list, tuple) and len(frame) == ENVELOPE_LEN:
                        self._index(seq, frame[2], frame[7], frame[4])
                        data = frame[9]
                        if frame[4] == _METRICS and isinstance(data, dict):
                            segment, metrics = data.get("segment_id"), data.get("metrics")
                            if isinstance(segment, str) and isinstance(metrics, dict):
                                self._train(segment, metrics)
                nxt = batch[-1][0] + 1
                self._indexed_to = min(upto, batch[-1][0])
                await asyncio.sleep(0)
        except (JournalError, ValueError) as exc:
            self.error = f"indexing the log stopped: {exc}"

    def seq_of(self, event_id: str) -> int | None:
        return self._ids.get(event_id)

    def correlated(self, corr: str) -> list[int]:
        return sorted(set(self._corr.get(corr, [])))

    # --- reading events back ----------------------------------------------------------------

    def read(self, seq: int) -> Envelope | None:
        if seq < 1 or seq > self.head:
            return None
        batch = self._records(seq, 1)
        if not batch or batch[0][0] != seq:
            return None
        return history.decode_record(*batch[0])

    def cause_chain(self, env: Envelope, limit: int = 50) -> list[dict[str, Any]]:
        """The events that led to ``env``, nearest first, through their ``cause`` ids."""
        chain: list[dict[str, Any]] = []
        cause = env.cause
        while cause and len(chain) < limit:
            seq = self.seq_of(cause)
            if seq is None:
                gist = "a metrics report or an unrecorded cause"
                chain.append({"id": cause, "seq": None, "type": None, "gist": gist})
                break
            parent = self.read(seq)
            if parent is None:
                break
            chain.append({"id": parent.id, "seq": parent.seq, "type": parent.type, "gist": timeline.gist(parent)})
            cause = parent.cause
        return chain

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """While a stream is open: committed events are kept, encoded once, for every stream."""
        self._attached += 1
        try:
            yield
        finally:
            self._attached -= 1
            if not self._attached:
                self._ring.clear()

    def after(self, seq: int) -> list[tuple[int, str]] | None:
        """The kept events after ``seq`` (empty: none yet); None when some of them are no longer
        kept (a stream that fell behind, or events from before it attached): read the log."""
        head, ring = self.head, self._ring
        if seq >= head:
            return []
        if not ring or ring[-1][0] != head or seq + 1 < ring[0][0]:
            return None
        return ring[seq + 1 - ring[0][0] :]

    async def wait(self, timeout_s: float) -> bool:
        """Until more events are folded (True) or ``timeout_s`` passes (False)."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    @property
    def subscribers(self) -> int:
        return self._attached

    async def catch_up(self, after: int, upto: int) -> AsyncIterator[tuple[int, str]]:
        """Committed events ``after < seq <= upto`` from the log, in order."""
        nxt = after + 1
        while nxt <= upto:
            batch = self._records(nxt, 1024)
            if not batch:
                return
            docs = [(seq, event_json(history.decode_record(seq, p))) for seq, p in batch if seq <= upto]
            for item in docs:
                yield item
            nxt = batch[-1][0] + 1
