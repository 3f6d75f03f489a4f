"""The metric store: per-segment and per-lineage series, rebuilt from the committed events.

    store = MetricStore()
    store.observe(env)                         # every committed event, in seq order (catch-up too)
    store.segment("r1-t3-g0")["train_loss"]    # a Series: ema, median, slope, best, spike
    store.lineage("val_objective", state)      # the champion lineage's curve on the global step

Consumes: ``MetricsObserved`` (canonical metrics: our worker's telemetry, or in external
mode the watcher's sources' readings), ``SegmentFinished`` (its final validation metrics
are a point of its series too). Emits nothing: it is a projection.

The guard rails fold their own store from the log (the one user today; the tuner and the
stopper read the state, ``state.queries``) instead of querying a shared one over the bus
(docs/ARCHITECTURE.md: actors share no memory, and a query round trip would buy nothing
when every actor already sees every event). Replaying the same events rebuilds the same
series, so every aggregate a decision quotes as evidence can be recomputed after the fact.

Imports the standard library, ``protocol``, ``state.model`` and ``store.series`` only.
"""

from __future__ import annotations

from collections import defaultdict

from ...protocol import Envelope
from ...protocol import messages as m
from ...state.model import TunerState
from .series import Series

SEGMENT_LIMIT = 10_000  # segments kept; a run has tens to hundreds, this bounds a runaway one


class MetricStore:
    def __init__(self) -> None:
        self._segments: dict[str, defaultdict[str, Series]] = {}
        self.last_seq = 0

    def observe(self, env: Envelope) -> None:
        if env.seq <= self.last_seq:
            return  # already folded (a restart re-reads from its start state)
        self.last_seq = env.seq
        msg = env.data
        if isinstance(msg, m.MetricsObserved) and msg.segment_id is not None:
            self._add(msg.segment_id, msg.step, msg.metrics)
        elif isinstance(msg, m.SegmentFinished):
            self._add(msg.segment_id, msg.end_step, msg.metrics)

    def _add(self, segment_id: str, step: int, metrics: m.Metrics) -> None:
        series = self._segments.get(segment_id)
        if series is None:
            if len(self._segments) >= SEGMENT_LIMIT:
                self._segments.pop(next(iter(self._segments)))
            series = self._segments[segment_id] = defaultdict(Series)
        for name, value in metrics.items():
            series[name].add(step, float(value))

    def segment(self, segment_id: str) -> dict[str, Series]:
        """The series of one segment by metric name (empty if it reported nothing)."""
        return dict(self._segments.get(segment_id, {}))

    def metric(self, segment_id: str, name: str) -> Series:
        series = self._segments.get(segment_id)
        return series[name] if series is not None and name in series else Series()

    def lineage_segments(self, state: TunerState) -> list[str]:
        """The champion's ancestry, oldest first: each segment and the one its checkpoint came from."""
        champion = state.tuning.champion
        if champion is None:
            return []
        by_checkpoint = {s.checkpoint: s for s in state.tuning.segments.values() if s.checkpoint}
        chain: list[str] = []
        seg = state.tuning.segments.get(champion.segment_id)
        while seg is not None and len(chain) < SEGMENT_LIMIT:
            chain.append(seg.segment_id)
            seg = by_checkpoint.get(seg.from_checkpoint) if seg.from_checkpoint else None
        return chain[::-1]

    def lineage(self, name: str, state: TunerState) -> Series:
        """One metric along the champion's lineage, on the global step."""
        out = Series()
        for sid in self.lineage_segments(state):
            series = self.metric(sid, name)
            if series:
                for step, value in zip(series.steps, series.values, strict=True):
                    out.add(step, value)
        return out
