"""What a pass of ``bench/suite.py`` costs on this machine: seconds per training step of each
built-in task, and the training time of a full and a ``--quick`` pass projected from them.

    python bench/suite_cost.py [--steps 20] [--side-by-side] [--tasks demo,voice,small,large]

For each task, its model (preset and hparams) at its batch size trains ``--steps`` steps on
its own corpus (the tuner's folder the suite would give it) after 3 warm-up steps, on one
torch thread as the suite's arms do; with ``--side-by-side`` a second process trains the
same beside it, as ``--parallel 2`` runs two arms at once on two cores. Then:

* a ``--quick`` pass is every arm once per task: six arms plus the oracle's six grid points,
  each the task's budget of steps, less the grid point that is the control's own run
  (11 x budget steps per task);
* a full pass is three seeds of the six arms plus the oracle once (23 x budget per task);
* the projected hours are those steps at the measured seconds per step, divided by the two
  arms that run side by side.

What the projection leaves out: process start-up, validation at each segment end, the
test-set measurements (each lineage checkpoint of each arm), the peers' own overhead (Ray
pauses and resumes PBT members from checkpoints), and a machine shared with anything else.
The suite's own per-arm ``wall_s`` (in ``OUT/results``) is the measured figure; this is the
floor under it. Ends with ``RESULT quick_train_h=… full_train_h=… s_per_step_<task>=…``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tuning_suite.arms import START, control_point, oracle_points  # noqa: E402
from tuning_suite.tasks import BUILTIN, FULL, TaskData, materialise  # noqa: E402

from smart_tuner.trainer.config import TrainerConfig  # noqa: E402
from smart_tuner.trainer.harness import Trainer  # noqa: E402
from smart_tuner.trainer.hparams import preset  # noqa: E402

ARMS_PER_SEED = 6  # control, forks, pbt, trials, ray_pbt, optuna_hb
SEEDS = 3


def seconds_per_step(data: TaskData, steps: int, out: Path) -> float:
    task = data.task
    hp = preset(task.preset).replace(**{**START, "batch_size": task.batch, **data.audio, **task.hparams})
    config = TrainerConfig(dataset=data.tuner_dir, val_count=task.n_select, output_dir=out, threads=1)
    trainer = Trainer(config, hp)
    for _ in range(3):
        trainer.train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--tasks", default=",".join(FULL))
    p.add_argument("--side-by-side", action="store_true", help="a second process trains the same task beside it")
    p.add_argument("--out", type=Path, default=Path("runs/suite"), help="where the suite keeps its tasks")
    p.add_argument("--task", help=argparse.SUPPRESS)  # the side-by-side child
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.task:  # the child: train, print nothing
        data = materialise(BUILTIN[args.task], args.out)
        seconds_per_step(data, args.steps, Path(tempfile.mkdtemp(prefix="suite-cost-")))
        return 0
    n_oracle = len(oracle_points(False)) - (control_point(False) is not None)  # that one is the control's run
    quick = full = 0.0
    per_task: dict[str, float] = {}
    for name in args.tasks.split(","):
        data = materialise(BUILTIN[name], args.out)
        child = None
        if args.side_by_side:
            cmd = [sys.executable, __file__, "--task", name, "--steps", str(args.steps + 10), "--out", str(args.out)]
            child = subprocess.Popen(cmd)
            time.sleep(15)  # it loads and warms up; then both train
        try:
            sps = seconds_per_step(data, args.steps, Path(tempfile.mkdtemp(prefix="suite-cost-")))
        finally:
            if child is not None:
                child.wait(timeout=3600)
        per_task[name] = sps
        budget = data.task.budget
        quick_steps = (ARMS_PER_SEED + n_oracle) * budget
        full_steps = (SEEDS * ARMS_PER_SEED + n_oracle) * budget
        quick += quick_steps * sps / 2 / 3600
        full += full_steps * sps / 2 / 3600
        quick_h, full_h = quick_steps * sps / 2 / 3600, full_steps * sps / 2 / 3600
        print(
            f"{name:>8}: batch {data.task.batch}, budget {budget}: {sps:.3f} s/step; quick {quick_steps} steps "
            f"({quick_h:.2f} h on 2 cores), full {full_steps} ({full_h:.2f} h)",
            flush=True,
        )
    steps_part = " ".join(f"s_per_step_{k}={v:.3f}" for k, v in per_task.items())
    print(f"RESULT quick_train_h={quick:.2f} full_train_h={full:.2f} {steps_part}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
