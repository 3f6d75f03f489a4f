"""Data-parallel training under torchrun on the CPU (gloo, 2 ranks): identical hyperparameters and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "tests" / "helpers" / "ddp_check.py"


def torchrun(tmp_path: Path, *extra: str) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(HELPER), str(tmp_path / "out"), str(tmp_path / "data"), *extra],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert isinstance(result, dict)
    return result


@pytest.mark.slow
def test_a_hot_change_reaches_every_rank_and_the_weights_stay_identical(tmp_path: Path) -> None:
    result = torchrun(tmp_path)
    r0, r1 = result["ranks"]  # type: ignore[index, misc]
    assert result["failure"] is None
    assert r0["step"] == r1["step"] == 6
    assert r0["hparams"] == r1["hparams"] == {"learning_rate": 5e-3, "p_encoder_dropout": 0.2,
                                              "grad_clip_thresh": 0.5, "adam_beta2": 0.98}  # fmt: skip
    assert r0["optimizer"] == r1["optimizer"] == {"lr": 5e-3, "betas": [0.9, 0.98]}  # applied, not only recorded
    assert r0["dropout"] == r1["dropout"] == 0.2
    assert r0["weights"] == r1["weights"]  # 6 steps on different data slices, one optimizer step each time
    assert r0["checkpoints"] == ["s1.pt", "s2.pt"] and r1["checkpoints"] == []  # only rank 0 writes


@pytest.mark.slow
def test_a_nan_on_one_rank_fails_the_segment_on_every_rank_without_hanging(tmp_path: Path) -> None:
    result = torchrun(tmp_path, "fail")
    assert result["failure"] == {"reason": "nan", "step": 2}  # rank 1's NaN, raised by rank 0 too
    r0, r1 = result["ranks"]  # type: ignore[index, misc]
    # both stopped before step 2's optimizer step (its forward pass moved each rank's batch-norm
    # statistics on its own slice; the rollback to the segment's checkpoint discards them)
    assert r0["step"] == r1["step"] == 1 and r0["parameters"] == r1["parameters"]
