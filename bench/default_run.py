"""What a fresh clone's ``python run_tuner.py`` gets, and how much that moves with the seed and the threads.

    python bench/default_run.py                       # 1 repeat + model seeds 1234,1,2 + threads 1,2
    python bench/default_run.py --seeds 1234 --threads 2 --repeats 2 --out runs/default-bench

Each run is the embedded default config (``run_tuner.py run`` with no ``--config``: the demo
corpus, strategy ``forks``, 600 steps) with at most two things changed: the model's seed
(``trainer.hparams.seed``; the embedded default is the preset's 1234) and the torch threads
per worker (``trainer.threads``; the embedded default leaves it to torch, which takes every
core). The first variant, (seed 1234, the machine's default threads), is the plain default
and runs ``--repeats`` times in a row: the repeat must give the same champion, bit for bit
(the trainer is deterministic on one machine with one thread count; across CPUs or thread
counts floating-point sums differ and a run may take another path).

Reports for every run: the champion's selection objective and diagonality, its test-set
objective and free-running stop rate (the end-of-run measurement on the demo's sixteen
test sentences), the winning lineage, steps and wall time; then the spread (min, median,
max) of the champion's test objective over the variants. Ends with
``RESULT repeat_identical=… test_median=… test_min=… test_max=… n_runs=…``.

The runs train one after another (each uses what threads it is given); wall times depend on
what else the machine does, the results do not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEED = 1234


def variant_config(seed: int, threads: int | None) -> dict[str, Any]:
    """The embedded default (``configs/smart_tuner.yaml`` is it, key for key) with the model seed and threads set."""
    raw = yaml.safe_load((ROOT / "configs" / "smart_tuner.yaml").read_text(encoding="utf-8"))
    raw["trainer"]["threads"] = threads
    if seed != DEFAULT_SEED:
        raw["trainer"]["hparams"] = {**(raw["trainer"].get("hparams") or {}), "seed": seed}
    return raw


def run_once(name: str, seed: int, threads: int | None, out: Path) -> dict[str, Any]:
    run_dir = out / name
    if (run_dir / "result.json").is_file():
        return json.loads((run_dir / "result.json").read_text())
    cmd = [sys.executable, str(ROOT / "run_tuner.py"), "run", "--run-dir", str(run_dir), "--log-level", "warning"]
    if seed != DEFAULT_SEED or threads is not None:
        cfg_path = out / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(variant_config(seed, threads), sort_keys=False))
        cmd += ["--config", str(cfg_path)]
    if run_dir.exists():  # an interrupted attempt
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: run_tuner.py exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    state = yaml.safe_load((run_dir / "tuner_state.yaml").read_text())
    champion = state["tuning"]["champion"]
    segment = state["tuning"]["segments"][champion["segment_id"]]
    test_file = run_dir / "samples" / "test_metrics.json"
    test = json.loads(test_file.read_text()) if test_file.is_file() else {}
    result = {
        "name": name,
        "seed": seed,
        "threads": threads,
        "champion_objective": champion["objective"],
        "champion_diagonality": segment["metrics"].get("diagonality"),
        "champion_segment": champion["segment_id"],
        "champion_trial": champion["trial_id"],
        "round_winners": [r.get("winner") for r in state["tuning"]["rounds"]],
        "changed_hparams": state["control"]["summary"].get("changed_hparams"),
        "test_objective": test.get("val_objective"),
        "test_gate_stop_rate": test.get("fr_gate_stop_rate"),
        "test_mcd_dtw": test.get("fr_mcd_dtw"),
        "steps": state["control"]["summary"]["steps_spent"],
        "wall_s": wall,
        "cpu_count": os.cpu_count(),
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="1234,1,2", help="model seeds (default 1234,1,2; 1234 is the default's)")
    p.add_argument("--threads", default="default,1", help="torch threads per worker ('default': torch's choice)")
    p.add_argument("--repeats", type=int, default=2, help="runs of the plain default, in a row (default 2)")
    p.add_argument("--out", type=Path, default=Path("runs/default-bench"))
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
        threads = [None if t == "default" else int(t) for t in args.threads.split(",") if t]
    except ValueError as exc:
        print(f"default_run: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    plan = [(f"default-{n + 1}", seeds[0], threads[0]) for n in range(args.repeats)]
    plan += [(f"seed{s}-threads{t or 'default'}", s, t) for s in seeds for t in threads if (s, t) != plan[0][1:]]
    results = []
    for name, seed, t in plan:
        r = run_once(name, seed, t, args.out)
        results.append(r)
        print(
            f"{name:>24}: champion {r['champion_objective']:.4f} (diag {r['champion_diagonality']:.2f}, "
            f"{r['champion_trial']}), test {r['test_objective']:.4f}, gate stopped {r['test_gate_stop_rate']:.0%}, "
            f"{r['wall_s'] / 60:.1f} min",
            flush=True,
        )
    repeats = [r for r in results if r["name"].startswith("default-")]
    first = repeats[0]
    identical = all(
        (r["champion_objective"], r["champion_segment"]) == (first["champion_objective"], first["champion_segment"])
        for r in repeats
    )
    variants = [r for r in results if not r["name"].startswith("default-")] + repeats[:1]
    tests = sorted(r["test_objective"] for r in variants)
    print(
        f"RESULT repeat_identical={int(identical)} test_median={statistics.median(tests):.4f} "
        f"test_min={tests[0]:.4f} test_max={tests[-1]:.4f} n_runs={len(results)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
