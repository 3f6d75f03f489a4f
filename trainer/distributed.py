"""Data-parallel training across ranks (``torchrun``): identical hyperparameters and weights everywhere.

    dist = Dist.from_env()                  # None outside torchrun (WORLD_SIZE unset or 1)
    trainer.dist = dist
    if dist.rank == 0:
        result = dist.run_segment(trainer, command)   # broadcast, then train it together
    else:
        follow(trainer, dist)                         # run what rank 0 broadcasts, until told to stop

Every rank holds the whole model (the same initial weights: the same seed) and the same
batch stream; each step, rank ``r`` trains on the slice ``indices[r::world]`` of the step's
batch (``batch_size`` is the global batch), the gradients are averaged with
``all_reduce`` before clipping, so every rank takes the identical optimizer step, and the
batch-norm running statistics are averaged after it: the weights never drift apart. This
is what ``DistributedDataParallel`` computes; it is done by hand so that the hot-reload
machinery keeps working on the plain model.

A segment is one broadcast command (``Segment``: id, starting checkpoint, hyperparameter
changes, steps): every rank applies the same changes at the same step, because they come
from rank 0 in that one message. A non-finite loss on any rank is agreed on before the
backward pass (an ``all_reduce`` of a flag), so every rank raises the same
``SegmentError("nan")`` at the same step instead of one rank waiting forever in a
collective. Only rank 0 validates, reports and writes checkpoints (the others read them
from the shared filesystem at the next segment's start). Not agreed on yet: a failure on
one rank alone outside the loss (an out-of-memory on one device, a crash): the other
ranks then wait in their next collective until the process group's timeout.

Backends: ``gloo`` on the CPU (how the tests run it, 2 ranks), ``nccl`` on CUDA.
Imports torch and the standard library.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as td

if TYPE_CHECKING:
    from .harness import SegmentResult, Trainer


@dataclass(frozen=True, slots=True)
class Segment:
    segment_id: str
    from_checkpoint: str | None
    from_sha256: str | None
    hparams: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 1
    eval_every: int = 0
    report_every: int = 10


@dataclass(frozen=True, slots=True)
class Dist:
    rank: int
    world: int

    @classmethod
    def from_env(cls, backend: str | None = None) -> Dist | None:
        """The process group torchrun describes in the environment (None when there is none)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        if not td.is_initialized():
            backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
            if backend == "nccl":  # each rank on its own GPU before the group forms (torchrun's LOCAL_RANK)
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            td.init_process_group(backend)
        return cls(rank=td.get_rank(), world=td.get_world_size())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def shard(self, indices: Sequence[int]) -> list[int]:
        if len(indices) < self.world:
            raise ValueError(f"a batch of {len(indices)} cannot feed {self.world} ranks (batch_size >= world size)")
        return list(indices[self.rank :: self.world])

    def all_finite(self, value: float) -> bool:
        """Whether ``value`` is finite on every rank (every rank gets the same answer)."""
        flag = torch.tensor([0.0 if math.isfinite(value) else 1.0])
        td.all_reduce(flag)
        return float(flag.item()) == 0.0

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank (every rank gets the same answer)."""
        return not self.all_finite(math.nan if flag else 0.0)

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        self._average([p.grad for p in params if p.grad is not None])

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Batch-norm running statistics, averaged over the ranks (each saw its own slice)."""
        self._average([b for b in module.buffers() if b.is_floating_point()])

    def _average(self, tensors: list[torch.Tensor]) -> None:
        """Each tensor replaced, in place, by its mean over the ranks (one all_reduce for all)."""
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        td.all_reduce(flat)
        flat /= self.world
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n

    def close(self) -> None:
        """Leave the group together: a barrier, then the group torn down. A rank that tore its gloo
        group down while the other was still in its last collective died now and then with
        "terminate called without an active exception" (SIGABRT) at exit."""
        if td.is_initialized():
            td.barrier()
            td.destroy_process_group()

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def run_segment(self, trainer: Trainer, segment: Segment | None, **callbacks: Any) -> SegmentResult | None:
        """Rank 0: broadcast ``segment`` (None: stop the followers) and train it on every rank.

        ``callbacks`` (rank 0's ``report``, ``should_abort``, ``on_applied``, ...) go to its own
        ``run_segment``; an abort is agreed on by every rank between two steps."""
        segment = self.broadcast(segment)
        if segment is None:
            return None
        return trainer.run_segment(
            segment.segment_id,
            segment.from_checkpoint,
            segment.from_sha256,
            segment.hparams,
            segment.steps,
            eval_every=segment.eval_every,
            report_every=segment.report_every,
            **callbacks,
        )


def follow(trainer: Trainer, dist: Dist) -> int:
    """A rank other than 0: run every segment rank 0 broadcasts until it broadcasts None; how many ran."""
    from .harness import SegmentError

    n = 0
    while True:
        try:
            if dist.run_segment(trainer, None) is None:
                return n
        except (SegmentError, ValueError):  # the same on every rank (a NaN, a refused change): rank 0 reports it
            pass
        n += 1
