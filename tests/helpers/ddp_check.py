"""Run under torchrun (2 ranks, gloo): two segments with a hot change between them, then report.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/ddp_check.py OUT_DIR DATA_DIR [fail]

Rank 0 broadcasts each segment; rank 1 follows. With ``fail``, rank 1 alone sees a NaN loss
at step 2: every rank must raise the same SegmentError and the run end cleanly.
Writes OUT_DIR/result.json (rank 0): each rank's hyperparameters, optimizer values and a hash
of its weights, and the checkpoints each rank wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import torch

from smart_tuner.trainer.config import TrainerConfig
from smart_tuner.trainer.distributed import Dist, Segment, follow
from smart_tuner.trainer.harness import SegmentError, Trainer
from smart_tuner.trainer.hparams import preset

CHANGE = {"learning_rate": 5e-3, "p_encoder_dropout": 0.2, "grad_clip_thresh": 0.5, "adam_beta2": 0.98}


def poison(trainer: Trainer) -> None:
    """This rank's loss becomes NaN at step 2 (patched on the class: the trainer rebuilds its loss object)."""
    from smart_tuner.trainer.loss import Tacotron2Loss

    original = Tacotron2Loss.__call__

    def call(self: Tacotron2Loss, *args: object) -> object:
        parts = original(self, *args)  # type: ignore[arg-type]
        if trainer.step + 1 == 2:
            parts.total = parts.total * math.nan
        return parts

    Tacotron2Loss.__call__ = call  # type: ignore[method-assign,assignment]


def weights_hash(trainer: Trainer, buffers: bool = True) -> str:
    h = hashlib.sha256()
    tensors = trainer.model.state_dict() if buffers else dict(trainer.model.named_parameters())
    for k, v in sorted(tensors.items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    out, data = Path(sys.argv[1]), Path(sys.argv[2])
    fail = len(sys.argv) > 3 and sys.argv[3] == "fail"
    torch.set_num_threads(1)
    dist = Dist.from_env()
    assert dist is not None and dist.world == 2
    trainer = Trainer(
        TrainerConfig(dataset="tiny", output_dir=out / f"rank{dist.rank}", data_dir=data, threads=1, val_count=2),
        preset("tiny"),
    )
    trainer.dist = dist
    if fail and dist.rank == 1:
        poison(trainer)
    failure = None
    if dist.rank == 0:
        try:
            first = dist.run_segment(trainer, Segment("s1", None, None, {}, 3))
            assert first is not None
            dist.run_segment(trainer, Segment("s2", str(first.checkpoint), first.sha256, CHANGE, 3))
        except SegmentError as exc:
            failure = {"reason": exc.reason, "step": exc.step}
        dist.run_segment(trainer, None)
    else:
        follow(trainer, dist)
    opt = trainer.optimizer.param_groups[0]
    mine = {
        "rank": dist.rank,
        "step": trainer.step,
        "weights": weights_hash(trainer),
        "parameters": weights_hash(trainer, buffers=False),
        "hparams": {k: getattr(trainer.hp, k) for k in CHANGE},
        "optimizer": {"lr": opt["lr"], "betas": list(opt["betas"])},
        "dropout": trainer.model.encoder.dropout,
        "checkpoints": sorted(p.name for p in (out / f"rank{dist.rank}").rglob("*.pt")),
    }
    everyone = dist.gather(mine)
    if dist.rank == 0:
        (out / "result.json").write_text(json.dumps({"ranks": everyone, "failure": failure}))
    dist.close()


if __name__ == "__main__":
    main()
