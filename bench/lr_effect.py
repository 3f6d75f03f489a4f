"""Does the learning rate matter on the demo corpus? Val objective and diagonality for three fixed rates.

    python bench/lr_effect.py [--steps 600] [--eval-every 100] [--lrs 3e-4,1e-3,3e-3] [--parallel 2]
    python bench/lr_effect.py --lrs 1e-3 --seeds 1234,1,2      # seed noise at one rate

Each learning rate trains the demo model from the same seed on the bundled corpus for
``--steps`` steps (one process each, one thread each, ``--parallel`` at a time), with a
validation every ``--eval-every`` steps: the unweighted objective (mel after postnet +
gate), diagonality and the training seconds spent so far. Tuning can only be shown on
this corpus if these rates end clearly apart (seed noise about ±0.03, REFERENCE.md).

With several ``--seeds`` (the model's ``seed``: initial weights, data order, dropout) each
rate runs once per seed and the table shows the first seed; the summary gives each rate's
mean and standard deviation over the seeds: the noise a tuner must treat as a tie.

Ends with ``RESULT val_<lr>=… diag_<lr>=… diag09_s_<lr>=… …`` (diag09_s: training seconds until
diagonality first reached 0.9; -1 if never); with several seeds also ``val_sd_<lr>=…``; values are
means over the seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHILD = """
import json, sys, time
from pathlib import Path
from smart_tuner.trainer.config import TrainerConfig
from smart_tuner.trainer.harness import Trainer
from smart_tuner.trainer.hparams import preset
lr, steps, every, out = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
seed = int(sys.argv[5])
trainer = Trainer(TrainerConfig(dataset="demo", output_dir=out, threads=1), preset("demo").replace(seed=seed))
rows, spent, t0 = [], 0.0, time.perf_counter()
def report(step, metrics):
    global spent, t0
    if "val_objective" in metrics:
        spent += time.perf_counter() - t0
        rows.append({"step": step, "train_s": round(spent, 1), "val_objective": metrics["val_objective"],
                     "diagonality": metrics["diagonality"]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        t0 = time.perf_counter()
result = trainer.run_segment("lr", None, None, {"learning_rate": lr}, steps, eval_every=every, report=report)
spent += time.perf_counter() - t0
rows.append({"step": result.end_step, "train_s": round(spent, 1), "val_objective": result.metrics["val_objective"],
             "diagonality": result.metrics["diagonality"]})
print(json.dumps(rows))
"""


def run_one(lr: float, seed: int, steps: int, every: int, out: Path) -> list[dict[str, float]]:
    where = str(out / f"lr{lr:g}-seed{seed}")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, repr(lr), str(steps), str(every), where, str(seed)],
        capture_output=True,
        text=True,
        timeout=7200,
    )
    if proc.returncode != 0:
        raise SystemExit(f"lr {lr:g} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    parser.add_argument("--seeds", default="1234", help="model seeds, comma-separated (1234 is the preset's)")
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    out = Path(tempfile.mkdtemp(prefix="st-lr-bench-"))
    jobs = [(lr, seed) for seed in seeds for lr in lrs]  # seeds outermost: every rate advances together
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = dict(
            zip(jobs, pool.map(lambda j: run_one(j[0], j[1], args.steps, args.eval_every, out), jobs), strict=True)
        )
    results = {lr: runs[(lr, seeds[0])] for lr in lrs}
    print(f"{'step':>6} " + " ".join(f"{'lr ' + format(lr, 'g'):>22}" for lr in lrs))
    print(f"{'':>6} " + " ".join(f"{'objective  diag':>22}" for _ in lrs))
    for i, row in enumerate(results[lrs[0]][:-1]):
        cells = [f"{results[lr][i]['val_objective']:>10.4f} {results[lr][i]['diagonality']:>6.2f}     " for lr in lrs]
        print(f"{row['step']:>6} " + " ".join(cells))
    fields = []
    for lr in lrs:
        rows = results[lr]
        final = rows[-1]
        reached = next((r["train_s"] for r in rows if r["diagonality"] >= 0.9), -1)
        print(
            f"lr {lr:g}: final objective {final['val_objective']:.4f}, diagonality {final['diagonality']:.3f}, "
            f"{final['train_s']:.0f} s of training; diagonality >= 0.9 after {reached} s"
        )
        finals = [runs[(lr, s)][-1]["val_objective"] for s in seeds]
        mean = statistics.fmean(finals)
        fields += [f"val_{lr:g}={mean:.4f}", f"diag_{lr:g}={final['diagonality']:.3f}", f"diag09_s_{lr:g}={reached}"]
        if len(seeds) > 1:
            sd = statistics.stdev(finals)
            print(
                f"lr {lr:g} over seeds {seeds}: objectives {', '.join(f'{v:.4f}' for v in finals)}; "
                f"mean {mean:.4f}, sd {sd:.4f}"
            )
            fields.append(f"val_sd_{lr:g}={sd:.4f}")
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
