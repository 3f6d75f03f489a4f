"""The watcher: metrics from wherever they appear, as canonical ``MetricsObserved`` events.

    watcher = Watcher([source, ...])          # an actor core; each source is polled in its own task
    canonical("tensorboard", "validation.loss", directory="")  -> "val_loss"

Consumes: nothing from the log (it reads the sources). Emits: ``MetricsObserved`` with
canonical names (``train_loss``, ``val_loss``, ``grad_norm``, ``learning_rate``, ...) and
the ``source`` they came from.

Sources implement ``MetricSource``: ``async poll() -> list[Reading]``, returning what
appeared since the last call (never blocking the loop: file and MLflow reads go to a
thread). Our own trainer's telemetry needs no source: the worker already reports
canonical names and the supervisor relays its ``MetricsObserved`` as they came. The
TensorBoard event-file, MLflow and stdout sources for a user's own ``train.py`` implement
this interface; in external mode they run per segment inside ``trainer.external`` (which
must see the steps to end the segment at a checkpoint). ``CANONICAL`` is the mapping they
share, matched on
``(directory, tag)`` as REFERENCE.md advises, because ESPnet logs ``loss`` under both
``train/`` and ``valid/``.

Imports asyncio, ``protocol`` and the actors package only.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from ..protocol import Envelope, encode
from ..protocol import messages as m
from .bus import BusClient
from .presets import GENERIC, PRESETS
from .runtime import ActorCore

log = structlog.get_logger("watcher")

# Tags that two trainers use for different things: only a known preset may map them.
_AMBIGUOUS = frozenset({("", "mel_loss"), ("", "lr"), ("", "grad_norm"), ("", "learning_rate")})

# (source, directory, tag) -> canonical name; directory "" matches a tag anywhere. For
# TensorBoard: every preset's rules together (presets.py; a source that knows its preset
# uses that one alone); for stdout and MLflow: the keys as scripts commonly write them.
CANONICAL: Mapping[tuple[str, str, str], str] = {
    **{
        ("tensorboard", d, t): name
        for p in PRESETS.values()
        if p is not GENERIC
        for (d, t), name in p.tensorboard.items()
        if (d, t) not in _AMBIGUOUS
    },
    # NVIDIA's stdout line: "Train loss <i> <loss> Grad Norm <g> <dt>s/it"
    ("stdout", "", "loss"): "train_loss",
    ("stdout", "", "grad_norm"): "grad_norm",
    ("stdout", "", "lr"): "learning_rate",
    # MLflow keys as scripts commonly log them (canonical names pass as they are)
    ("mlflow", "", "loss"): "train_loss",
    ("mlflow", "", "training.loss"): "train_loss",
    ("mlflow", "", "validation.loss"): "val_loss",
    ("mlflow", "", "valid_loss"): "val_loss",
    ("mlflow", "", "grad.norm"): "grad_norm",
    ("mlflow", "", "learning.rate"): "learning_rate",
    ("mlflow", "", "lr"): "learning_rate",
}

# Names the tuner reads; a source may pass them through unmapped.
CANONICAL_NAMES = frozenset({*CANONICAL.values(), "val_objective", "diagonality", "gate_accuracy", "train_objective"})


def canonical(source: str, tag: str, directory: str = "") -> str | None:
    """The canonical name of ``tag`` logged by ``source`` under ``directory`` (None: not a metric we use)."""
    leaf = directory.rstrip("/").rsplit("/", 1)[-1]
    return CANONICAL.get((source, leaf, tag)) or CANONICAL.get((source, "", tag))


@dataclass(frozen=True, slots=True)
class Reading:
    step: int
    metrics: Mapping[str, float]  # canonical names
    segment_id: str | None = None


class MetricSource(abc.ABC):
    """Where metrics come from. ``poll`` returns what appeared since the last call, in step order."""

    name: str

    @abc.abstractmethod
    async def poll(self) -> Sequence[Reading]: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release files, clients."""


class Watcher(ActorCore):
    name = "watcher"

    def __init__(self, sources: Sequence[MetricSource], client: BusClient | None = None, every_s: float = 1.0) -> None:
        self.sources, self.client, self.every_s = list(sources), client, every_s
        self._tasks: list[asyncio.Task[None]] = []

    async def setup(self) -> None:
        if self.client is not None:
            self._tasks = [asyncio.create_task(self._watch(s), name=f"watch:{s.name}") for s in self.sources]

    async def teardown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for source in self.sources:
            with contextlib.suppress(Exception):  # closing is best effort; the run is ending
                await source.close()

    async def _watch(self, source: MetricSource) -> None:
        assert self.client is not None
        while True:
            try:
                readings = await source.poll()
            except Exception as exc:  # a source's failure is logged and retried; the run goes on
                log.warning("metric source failed", source=source.name, error=repr(exc))
                readings = []
            observed = [m.MetricsObserved(segment_id=r.segment_id, source=source.name, step=r.step,
                                          metrics=dict(r.metrics)) for r in readings]  # fmt: skip
            envs = [Envelope.new(o, actor="watcher") for o in observed]
            if envs:  # one round trip for a burst (the sequencer group-commits it)
                await self.client.propose_payloads([encode(e) for e in envs], 10.0)
            await asyncio.sleep(self.every_s)
