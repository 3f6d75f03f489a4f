"""``/metrics`` in Prometheus' text format, from the folded state (``prometheus_client``).

A fresh registry per scrape, filled from the state by one collector: nothing global, nothing
to keep in step, no ``_created`` series that would change on every scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ...state.model import TunerState
from ...state.queries import steps_spent
from .views import budget_steps


class StateCollector(Collector):
    def __init__(self, state: TunerState, subscribers: int, now: float) -> None:
        self.state, self.subscribers, self.now = state, subscribers, now

    def collect(self) -> Iterator[Metric]:
        state = self.state
        t, h = state.tuning, state.health

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield gauge("smart_tuner_steps_spent", "Training steps spent, every fork counted", steps_spent(state))
        budget = budget_steps(state)
        if budget is not None:
            yield gauge("smart_tuner_budget_steps", "The run's step budget", budget)
        yield gauge("smart_tuner_global_step", "The furthest step reported", state.progress.global_step)
        segments = GaugeMetricFamily("smart_tuner_segments", "Segments by status", labels=["status"])
        for status in ("scheduled", "running", "finished", "failed"):
            segments.add_metric([status], sum(1 for s in t.segments.values() if s.status == status))
        yield segments
        if t.champion is not None:
            yield gauge("smart_tuner_champion_objective", "The champion's selection objective", t.champion.objective)
            yield gauge("smart_tuner_champion_step", "The champion checkpoint's step", t.champion.step)
        yield counter("smart_tuner_promotions", "Rounds decided", t.promotions)
        yield counter("smart_tuner_guard_trips", "Guard rails tripped", len(h.guards))
        yield counter("smart_tuner_rollbacks", "Segments rolled back", len(h.rollbacks))
        yield counter("smart_tuner_actor_crashes", "Actors that crashed", len(h.crashes))
        yield counter("smart_tuner_alerts_sent", "Alerts delivered", h.alerts_sent)
        yield counter("smart_tuner_refused_messages", "Messages the sequencer refused", h.protocol_violations)
        yield counter("smart_tuner_events_committed", "Events in the log", state.last_seq)
        workers = GaugeMetricFamily("smart_tuner_workers", "Trainer workers by status", labels=["status"])
        for status in ("connected", "lost"):
            workers.add_metric([status], sum(1 for w in t.workers.values() if w.status == status))
        yield workers
        if state.last_ts is not None:
            age = max(0.0, self.now - state.last_ts)
            yield gauge("smart_tuner_last_event_age_seconds", "Seconds since the last committed event", age)
        yield gauge("smart_tuner_dashboard_streams", "Event streams attached to this dashboard", self.subscribers)


def render_metrics(state: TunerState, *, subscribers: int = 0, now: float | None = None) -> tuple[bytes, str]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StateCollector(state, subscribers, time.time() if now is None else now))
    return generate_latest(reg), CONTENT_TYPE_LATEST
