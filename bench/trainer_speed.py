"""Trainer speed: steps/s and peak RSS of the demo config; restart vs in-process changes.

    python bench/trainer_speed.py [--steps 30] [--restarts 3] [--threads 2] [--preset demo]

Side by side, in one run, on the bundled demo corpus (built at first use):

* training speed of the demo model (steps/s over ``--steps`` steps after 3 warm-up
  steps) and the peak RSS of this process;
* restart cost: a fresh process that imports torch, builds the trainer (data from the
  mel cache, model), loads a checkpoint and finishes its first training step; timed from
  spawn to that first step, median of ``--restarts``;
* in-process hyperparameter change: ``trainer.apply({...})`` of the hot parameters a
  tuner changes (lr, weight decay, five dropouts, two loss weights), median of 1000;
* in-process checkpoint switch: ``trainer.load(path, sha256)`` (read, sha256 check,
  weights_only unpickle, model + optimizer + RNG + stream restored, lr re-applied), median.

Ends with ``RESULT hot_apply_speedup=… ckpt_switch_speedup=… steps_per_s=… peak_rss_mb=…``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smart_tuner.trainer.config import TrainerConfig
from smart_tuner.trainer.harness import Trainer
from smart_tuner.trainer.hparams import preset

CHILD = """
import sys, time, json
t0 = float(sys.argv[1])
import torch
from pathlib import Path
from smart_tuner.trainer.config import TrainerConfig
from smart_tuner.trainer.harness import Trainer
from smart_tuner.trainer.hparams import preset
torch.set_num_threads(int(sys.argv[4]))
trainer = Trainer(TrainerConfig(dataset="demo", output_dir=Path(sys.argv[2]), threads=int(sys.argv[4])),
                  preset(sys.argv[5]))
trainer.load(Path(sys.argv[3]), None)
trainer.train_step()
print(json.dumps({"first_step_s": time.time() - t0}))
"""


def restart_cost(out: Path, checkpoint: Path, threads: int, name: str) -> float:
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, repr(t0), str(out), str(checkpoint), str(threads), name],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"restart child failed: {proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["first_step_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="demo")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="st-trainer-bench-"))

    trainer = Trainer(TrainerConfig(dataset="demo", output_dir=out, threads=args.threads), preset(args.preset))
    for _ in range(3):
        trainer.train_step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    steps_per_s = args.steps / (time.perf_counter() - t0)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    hot = [
        {
            "learning_rate": 3e-3,
            "weight_decay": 1e-5,
            "p_attention_dropout": 0.2,
            "p_decoder_dropout": 0.2,
            "p_prenet_dropout": 0.4,
            "p_encoder_dropout": 0.4,
            "p_postnet_dropout": 0.4,
            "guided_attn_weight": 2.0,
            "gate_loss_weight": 2.0,
        },
        {
            "learning_rate": 1e-3,
            "weight_decay": 1e-6,
            "p_attention_dropout": 0.1,
            "p_decoder_dropout": 0.1,
            "p_prenet_dropout": 0.5,
            "p_encoder_dropout": 0.5,
            "p_postnet_dropout": 0.5,
            "guided_attn_weight": 1.0,
            "gate_loss_weight": 1.0,
        },
    ]
    apply_s = []
    for i in range(1000):
        t = time.perf_counter()
        trainer.apply(hot[i % 2])
        apply_s.append(time.perf_counter() - t)
    hot_apply_s = statistics.median(apply_s)

    path = out / "switch.pt"
    sha = trainer.save(path)
    trainer.train_step()  # move away from it, so each load really replaces the state
    switch = []
    for _ in range(5):
        t = time.perf_counter()
        trainer.load(path, sha)
        switch.append(time.perf_counter() - t)
        trainer.holds = None
    switch_s = statistics.median(switch)

    restarts = [restart_cost(out, path, args.threads, args.preset) for _ in range(args.restarts)]
    restart_s = statistics.median(restarts)

    size_mb = path.stat().st_size / 1e6
    print(
        f"demo model ({args.preset}), {args.threads} threads: {steps_per_s:.2f} steps/s over {args.steps} steps; "
        f"peak RSS {peak_rss_mb:.0f} MB"
    )
    print(
        f"restart (fresh process -> first step, from a checkpoint): median {restart_s:.2f} s  "
        f"({', '.join(f'{r:.2f}' for r in restarts)})"
    )
    print(f"in-process hot change of {len(hot[0])} hyperparameters: median {hot_apply_s * 1e6:.1f} us")
    print(
        f"in-process checkpoint switch ({size_mb:.0f} MB: read, sha256, load, restore): median {switch_s * 1e3:.1f} ms"
    )
    print(
        f"RESULT hot_apply_speedup={restart_s / hot_apply_s:.0f} ckpt_switch_speedup={restart_s / switch_s:.1f} "
        f"steps_per_s={steps_per_s:.2f} peak_rss_mb={peak_rss_mb:.0f} restart_s={restart_s:.2f} "
        f"hot_apply_us={hot_apply_s * 1e6:.1f} ckpt_switch_ms={switch_s * 1e3:.1f}"
    )


if __name__ == "__main__":
    main()
