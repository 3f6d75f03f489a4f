"""The watcher: canonical names by (source, directory, tag), and a source's readings as committed events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from smart_tuner.actors.watcher import MetricSource, Reading, Watcher, canonical
from smart_tuner.protocol import messages as m
from smart_tuner.state import history
from tests.unit.busharness import harness, propose, run_started


def test_canonical_names_match_on_directory_and_tag() -> None:
    assert canonical("tensorboard", "training.loss") == "train_loss"  # NVIDIA
    assert canonical("tensorboard", "EvalStats/avg_loss") == "val_loss"  # Coqui
    assert canonical("tensorboard", "loss", "exp/tensorboard/train") == "train_loss"  # ESPnet2
    assert canonical("tensorboard", "loss", "exp/tensorboard/valid/") == "val_loss"
    assert canonical("tensorboard", "loss") is None  # ambiguous without its directory
    assert canonical("mlflow", "training.loss") == "train_loss"  # an MLflow key as NVIDIA names it
    assert canonical("stdout", "training.loss") is None  # each source has its own names


class Scripted(MetricSource):
    name = "tensorboard"

    def __init__(self, batches: list[list[Reading]], failing_first: bool = True) -> None:
        self.batches, self.failing = batches, failing_first

    async def poll(self) -> Sequence[Reading]:
        if self.failing:
            self.failing = False
            raise OSError("event file vanished")
        return self.batches.pop(0) if self.batches else []


def test_readings_become_metrics_observed_and_a_failing_poll_is_survived(tmp_path: Path) -> None:
    async def main() -> list[m.MetricsObserved]:
        async with harness("inproc", tmp_path) as h:
            await propose(h.client(), run_started())
            source = Scripted([[Reading(1, {"train_loss": 2.0}), Reading(2, {"train_loss": 1.5})],
                               [Reading(3, {"val_loss": 1.2}, segment_id="s1")]])  # fmt: skip
            watcher = Watcher([source], h.client(), every_s=0.01)
            three = asyncio.Event()
            seen: list[int] = []

            def count(env: object) -> None:
                if isinstance(getattr(env, "data", None), m.MetricsObserved):
                    seen.append(1)
                    if len(seen) == 3:
                        three.set()

            h.sequencer.on_commit(count)
            await watcher.setup()
            try:
                async with asyncio.timeout(10):
                    await three.wait()
            finally:
                await watcher.teardown()
            return [e.data for e in history.events(h.journal) if isinstance(e.data, m.MetricsObserved)]

    got = asyncio.run(main())
    assert [(e.step, dict(e.metrics), e.source, e.segment_id) for e in got] == [
        (1, {"train_loss": 2.0}, "tensorboard", None), (2, {"train_loss": 1.5}, "tensorboard", None),
        (3, {"val_loss": 1.2}, "tensorboard", "s1")]  # fmt: skip
