"""An MLflow run as a metric source: only the steps logged since the last poll.

    source = MlflowSource("sqlite:////abs/mlflow.db", run_id="…")          # one run
    source = MlflowSource(uri, experiment="tacotron2")                        # its newest run
    source = MlflowSource(uri, experiment="tacotron2", started_after_ms=t0)   # ... started since t0
    source = MlflowSource(uri, parent_run_id="…")                             # every child of a parent
    readings = await source.poll()

MLflow has no "metrics since step N" query (REFERENCE.md), so each poll reads the runs'
latest values (one ``get_run`` or ``search_runs``), and only for a key whose latest
(step, timestamp) moved fetches that key's history and keeps the points after the last
one it delivered. A run followed from the start therefore costs one small query per
poll while nothing is logged. Works through a local store or a tracking server (any
tracking URI MLflow accepts).

Keys map to canonical names through the watcher's table (``loss`` -> ``train_loss``,
``lr`` -> ``learning_rate``, ...); canonical names pass as they are; other keys are
counted in ``unmapped``. Calls happen in a worker thread; ``mlflow`` is imported there.

Imports the standard library, MLflow (lazily) and the watcher.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from .source import CANONICAL_NAMES, MetricSource, Reading, canonical


class MlflowSource(MetricSource):
    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str,
        *,
        run_id: str | None = None,
        experiment: str | None = None,
        parent_run_id: str | None = None,
        started_after_ms: int | None = None,
        segment_of: Callable[[], str | None] = lambda: None,
        mapping: Callable[[str], str | None] | None = None,
    ) -> None:
        if sum(x is not None for x in (run_id, experiment, parent_run_id)) != 1:
            raise ValueError("name exactly one of run_id, experiment or parent_run_id")
        self.tracking_uri = tracking_uri
        self.run_id, self.experiment, self.parent_run_id = run_id, experiment, parent_run_id
        self.segment_of = segment_of
        self.mapping = mapping  # a user's own names, before the common ones
        self.started_after_ms = started_after_ms  # experiment: only runs started since (a segment's own run)
        self.client: Any = None
        self.seen: dict[tuple[str, str], tuple[int, int]] = {}  # (run, key) -> (step, timestamp) delivered
        self.unmapped: Counter[str] = Counter()
        self.latest: dict[str, tuple[int, float]] = {}

    async def poll(self) -> Sequence[Reading]:
        return await asyncio.to_thread(self.read)

    def read(self) -> list[Reading]:
        if self.client is None:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.tracking_uri)
        by_step: dict[int, dict[str, float]] = {}
        for run in self._runs():
            rid = run.info.run_id
            for metric in run.data._metric_objs:  # the latest point of each key
                key = metric.key
                user = self.mapping(key) if self.mapping is not None else None
                name = user or canonical("mlflow", key) or (key if key in CANONICAL_NAMES else None)
                if name is None:
                    self.unmapped[key] += 1
                    continue
                last = self.seen.get((rid, key))
                if last is not None and (metric.step, metric.timestamp) <= last:
                    continue
                history = sorted(self.client.get_metric_history(rid, key), key=lambda p: (p.step, p.timestamp))
                fresh = [p for p in history if last is None or (p.step, p.timestamp) > last]
                for p in fresh:
                    by_step.setdefault(int(p.step), {})[name] = float(p.value)
                    if p.step >= self.latest.get(name, (-1, 0.0))[0]:
                        self.latest[name] = (int(p.step), float(p.value))
                if fresh:
                    self.seen[(rid, key)] = (fresh[-1].step, fresh[-1].timestamp)
        segment = self.segment_of()
        return [Reading(step=s, metrics=m, segment_id=segment) for s, m in sorted(by_step.items())]

    def _runs(self) -> list[Any]:
        if self.run_id is not None:
            return [self.client.get_run(self.run_id)]
        if self.experiment is not None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                return []
            since = "" if self.started_after_ms is None else f"attributes.start_time >= {self.started_after_ms}"
            newest = self.client.search_runs(
                [exp.experiment_id], since, order_by=["attributes.start_time DESC"], max_results=1
            )
            return list(newest)
        parent = self.client.get_run(self.parent_run_id)
        return list(
            self.client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'")
        )
