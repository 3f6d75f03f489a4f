"""What every metric source is: ``MetricSource``, ``Reading``, and the canonical mapping.

    canonical("tensorboard", "validation.loss", directory="")  -> "val_loss"

Sources implement ``MetricSource``: ``async poll() -> list[Reading]``, returning what
appeared since the last call (never blocking the loop: file and MLflow reads go to a
thread). Our own trainer's telemetry needs no source: the worker already reports
canonical names and the supervisor relays its ``MetricsObserved`` as they came. The
TensorBoard event-file, MLflow and console sources for a user's own ``train.py``
implement this interface; in external mode they run per segment inside the external
worker (``actors.external.worker``, which must see the steps to end the segment at a
checkpoint) and become ``MetricsObserved`` events there. ``CANONICAL`` is the mapping
they share, matched on ``(directory, tag)`` as REFERENCE.md advises, because ESPnet logs
``loss`` under both ``train/`` and ``valid/``.

Imports the standard library and ``layouts`` only.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...protocol import metrics as mx
from .layouts import GENERIC, LAYOUTS

# Tags that two trainers use for different things: only a known preset may map them.
_AMBIGUOUS = frozenset({("", "mel_loss"), ("", "lr"), ("", "grad_norm"), ("", "learning_rate")})

# (source, directory, tag) -> canonical name; directory "" matches a tag anywhere. For
# TensorBoard: every preset's rules together (layouts.py; a source that knows its preset
# uses that one alone); for stdout and MLflow: the keys as scripts commonly write them.
CANONICAL: Mapping[tuple[str, str, str], str] = {
    **{
        ("tensorboard", d, t): name
        for p in LAYOUTS.values()
        if p is not GENERIC
        for (d, t), name in p.tensorboard.items()
        if (d, t) not in _AMBIGUOUS
    },
    # NVIDIA's stdout line: "Train loss <i> <loss> Grad Norm <g> <dt>s/it"
    ("stdout", "", "loss"): mx.TRAIN_LOSS,
    ("stdout", "", "grad_norm"): mx.GRAD_NORM,
    ("stdout", "", "lr"): mx.LEARNING_RATE,
    # MLflow keys as scripts commonly log them (canonical names pass as they are)
    ("mlflow", "", "loss"): mx.TRAIN_LOSS,
    ("mlflow", "", "training.loss"): mx.TRAIN_LOSS,
    ("mlflow", "", "validation.loss"): mx.VAL_LOSS,
    ("mlflow", "", "valid_loss"): mx.VAL_LOSS,
    ("mlflow", "", "grad.norm"): mx.GRAD_NORM,
    ("mlflow", "", "learning.rate"): mx.LEARNING_RATE,
    ("mlflow", "", "lr"): mx.LEARNING_RATE,
}

# Names the tuner reads; a source may pass them through unmapped.
CANONICAL_NAMES = frozenset(
    {*CANONICAL.values(), mx.VAL_OBJECTIVE, mx.DIAGONALITY, mx.GATE_ACCURACY, mx.TRAIN_OBJECTIVE}
)


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
