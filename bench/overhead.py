"""What does running under the tuner cost the trainer? Steps/s of one segment, bare vs tuned.

    python bench/overhead.py [--steps 100] [--rounds 2]

The same segment (the demo model from its seed, ``--steps`` steps, one validation and
one checkpoint at the end, one torch thread) runs alternately

* **bare**: ``Trainer.run_segment`` in a fresh process, nothing else running;
* **tuned**: inside ``run_tuner.py run`` (``strategy: none``, the whole budget in one
  segment): the coordinator, the journal, the projections and the worker's heartbeats,
  reports and asyncio loop all running; its time is the worker's own ``duration_s``.

Both time ``run_segment`` from the call to its return (training, validation, checkpoint),
excluding process start and trainer construction. Rounds alternate the arms so drift
hits both; the ratio is of the medians. Goal: ``overhead_ratio`` (tuned steps/s over bare
steps/s) >= 0.99. Ends with ``RESULT overhead_ratio=… bare_steps_per_s=… tuned_steps_per_s=…``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BARE = """
import json, sys, time
from pathlib import Path
from smart_tuner.trainer.config import TrainerConfig
from smart_tuner.trainer.harness import Trainer
from smart_tuner.trainer.hparams import preset
steps, out = int(sys.argv[1]), Path(sys.argv[2])
trainer = Trainer(TrainerConfig(dataset="demo", output_dir=out, threads=1), preset("demo"))
t0 = time.perf_counter()
trainer.run_segment("bare", None, None, {}, steps, report_every=10, report=lambda step, metrics: None)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def bare(steps: int, out: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", BARE, str(steps), str(out)], capture_output=True, text=True, timeout=3600, check=True
    )
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def tuned(steps: int, out: Path) -> float:
    config = {
        "strategy": "none",
        "budget": {"max_steps": steps},
        "forks": {"warmup_steps": steps},
        "trainer": {"threads": 1},
    }
    cfg = out.with_suffix(".yaml")
    cfg.write_text(yaml.safe_dump(config))
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_tuner.py"),
            "run",
            "--config",
            str(cfg),
            "--run-dir",
            str(out),
            "--log-level",
            "warning",
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    state = yaml.safe_load((out / "tuner_state.yaml").read_text())
    (segment,) = state["tuning"]["segments"].values()
    assert segment["steps"] == steps and segment["status"] == "finished"
    return float(segment["duration_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="st-overhead-"))
    b, t = [], []
    for i in range(args.rounds):
        b.append(bare(args.steps, out / f"bare{i}"))
        t.append(tuned(args.steps, out / f"tuned{i}"))
        print(f"round {i + 1}: bare {b[-1]:.1f} s, tuned {t[-1]:.1f} s for {args.steps} steps", flush=True)
    bare_rate, tuned_rate = args.steps / statistics.median(b), args.steps / statistics.median(t)
    ratio = tuned_rate / bare_rate
    print(f"bare {bare_rate:.3f} steps/s, tuned {tuned_rate:.3f} steps/s: ratio {ratio:.3f} (goal >= 0.99)")
    print(f"RESULT overhead_ratio={ratio:.3f} bare_steps_per_s={bare_rate:.3f} tuned_steps_per_s={tuned_rate:.3f}")


if __name__ == "__main__":
    main()
