"""A benchmark the tuner cannot be fitted to: held-out tasks, test splits, arms side by side at equal steps.

    python bench/suite.py                        # every built-in task, 3 seeds, every arm
    python bench/suite.py --quick                # one seed per task, every arm
    python bench/suite.py --smoke                # the tiny task, a couple dozen steps: the instrument works
    python bench/suite.py --task corpus=/data/my-lj,preset=demo,batch=16,budget=800
    python bench/suite.py --task-file my-tasks.yaml --arms control,forks

Tasks (``tuning_suite/tasks.py``): ``demo`` (today's demo corpus and model, 400 steps), and
on a compact model ``voice`` (another espeak-ng voice, rate and real sentences), ``small``
(70 training utterances), ``large`` (twice the batch, 1000 steps); or any LJSpeech-layout
folder or NVIDIA filelist. ``--report`` prints the table of the results so far and runs nothing. Each task's
utterances are split once into what the tuner may see and a **test** set it never sees
(not even in its dataset folder); the trainer holds out its own selection set from the
first. Arms (``tuning_suite/arms.py``): ``control``, ``forks``, ``pbt``, ``trials``, the
peers ``ray_pbt`` and ``optuna_hb`` (``pip install -e '.[bench]'``) and ``oracle``, each from
the same defaults and seed with the same budget of training steps (the oracle: every grid
point with the whole budget, one seed).

Every (task, arm, seed) result is written to ``OUT/results`` as soon as it is measured;
a rerun with the same ``--out`` runs only what is missing, so a full pass may span several
sittings. Checkpoints are deleted once measured (``--keep-checkpoints`` keeps them); the
journal, state and config of every run stay.

Reports on the test set: per task and arm the test objective, its ratio to the control,
diagonality, free-running stop rate and MCD-DTW, steps to reach the control's final test
objective and wall time; per arm the geometric mean of the ratio over the tasks and the
worst task. Ends with ``RESULT geo_forks=… worst_forks=… geo_pbt=… …``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tuning_suite.arms import (
    ORACLE_PREFIX,
    ArmError,
    ArmRun,
    Variant,
    best_point,
    control_point,
    oracle_points,
    parse_variant,
    run_arm,
)
from tuning_suite.results import ResultStore, aggregate, result_line, selection_line, summarise, table
from tuning_suite.tasks import (
    BUILTIN,
    FULL,
    Task,
    TaskData,
    TaskError,
    materialise,
    parse_task,
    tasks_from_file,
)

from smart_tuner.state.queries import read_result
from smart_tuner.trainer.checkpoint import CheckpointError
from smart_tuner.trainer.heldout import evaluate_checkpoint


def _commit() -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty", "--exclude", "*"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return proc.stdout.strip() or "unknown"


COMMIT = _commit()
ARMS = ("control", "forks", "pbt", "trials", "ray_pbt", "optuna_hb", "oracle")


def measure(run: ArmRun, data: TaskData) -> dict[str, Any]:
    """The answer's test metrics, and the test objective along its lineage."""
    test = evaluate_checkpoint(run.lineage[-1][1], data.test_dir)
    objective, diagonality = read_result(test)
    lineage = [[spent, read_result(evaluate_checkpoint(path, data.test_dir))[0]] for spent, path in run.lineage[:-1]]
    lineage.append([run.lineage[-1][0], objective])
    return {"test": test, "test_objective": objective, "test_diagonality": diagonality, "lineage": lineage}


def job(
    arm: str, data: TaskData, seed: int, out: Path, smoke: bool, keep: bool, variants: dict[str, Variant]
) -> dict[str, Any]:
    run_dir = out / "runs" / f"{data.task.name}-{data.task.digest()}" / f"{arm}-seed{seed}"
    if run_dir.exists():  # an interrupted attempt: its result was never written, so it starts again
        shutil.rmtree(run_dir)
    t0 = time.monotonic()
    run = run_arm(arm, data, seed, run_dir, smoke, variants)
    measured = measure(run, data)
    if not keep:
        for checkpoint in run_dir.rglob("*.pt"):
            checkpoint.unlink()
    return {
        "task": data.task.name,
        "task_key": f"{data.task.name}-{data.task.digest()}",
        "arm": arm,
        "seed": seed,
        **measured,
        "selection_objective": run.selection_objective,
        "steps": run.steps,
        "wall_s": time.monotonic() - t0,
        "detail": run.detail,
        "run_dir": str(run_dir),
        "commit": COMMIT,  # the code that trained it: a later policy change makes product arms' results stale
    }


def assemble_oracle(store: ResultStore, key: str, seed: int, smoke: bool) -> None:
    """The oracle's result once every grid point has one (kept beside the points' own). The point
    that is the control's hyperparameters is the control's own run, copied once it exists."""
    same = control_point(smoke)
    if same is not None and store.has(key, "control", seed) and not store.has(key, ORACLE_PREFIX + same, seed):
        control = json.loads(store.path(key, "control", seed).read_text())
        store.put({**control, "arm": ORACLE_PREFIX + same, "detail": {**control["detail"], "point": same}})
    names = [ORACLE_PREFIX + name for name, _ in oracle_points(smoke)]
    if store.has(key, "oracle", seed) or not all(store.has(key, n, seed) for n in names):
        return
    points = {n[len(ORACLE_PREFIX) :]: json.loads(store.path(key, n, seed).read_text()) for n in names}
    store.put(best_point(points))


def choose_tasks(args: argparse.Namespace) -> list[Task]:
    tasks = [parse_task(spec) for spec in args.task]
    for path in args.task_file:
        tasks += tasks_from_file(path)
    names = ["smoke"] if args.smoke else args.tasks.split(",") if args.tasks else [] if tasks else list(FULL)
    for name in names:
        if name not in BUILTIN:
            raise TaskError(f"--tasks: unknown task {name!r}; built in: {', '.join(BUILTIN)}")
        tasks.append(BUILTIN[name])
    if len({t.name for t in tasks}) != len(tasks):
        raise TaskError("two tasks share a name; give one of them name=…")
    return tasks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="the tiny task, every arm, one seed")
    p.add_argument("--quick", action="store_true", help="one seed per task")
    p.add_argument("--tasks", help=f"built-in tasks, comma-separated (default: {','.join(FULL)})")
    p.add_argument("--task", action="append", default=[], help="a corpus of your own: corpus=DIR,budget=…")
    p.add_argument("--task-file", action="append", default=[], type=Path, help="YAML task file")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated (default: {','.join(ARMS)})")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    p.add_argument("--parallel", type=int, default=2, help="arms run side by side (one torch thread each)")
    p.add_argument("--out", type=Path, default=Path("runs/suite"), help="results and runs (default runs/suite)")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="an extra arm: NAME=STRATEGY:key=value,... (a product strategy with config keys changed); "
        "name it in --arms",
    )
    p.add_argument("--report", action="store_true", help="only the table of the results so far; run nothing")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the test measurements, as the arms train: one thread, whatever the machine
    arms = [a for a in args.arms.split(",") if a]
    try:
        variants: dict[str, Variant] = {}
        for spec in args.variant:
            v = parse_variant(spec, set(ARMS) | set(variants))
            variants[v.name] = v
        unknown = sorted(set(arms) - set(ARMS) - set(variants))
        if unknown:
            known = ", ".join([*ARMS, *variants])
            raise TaskError(f"--arms: unknown arm(s) {', '.join(unknown)}; known: {known} (or a --variant's name)")
        seeds = [int(s) for s in args.seeds.split(",") if s]
        tasks = choose_tasks(args)
        if args.smoke or args.quick:
            seeds = seeds[:1]
        data = {t.name: materialise(t, args.out) for t in tasks}
    except (TaskError, ArmError, ValueError) as exc:
        print(f"suite: error: {exc}", file=sys.stderr)
        return 2
    store = ResultStore(args.out / "results")
    jobs = []
    for seed in seeds:  # seed after seed; within a seed, the arms of a task side by side
        for task in tasks:
            key = f"{task.name}-{task.digest()}"
            for arm in arms:
                if arm == "oracle":  # one job per grid point, on the first seed only
                    if seed == seeds[0] and not store.has(key, arm, seed):
                        # the control's own run stands for its grid point once it exists (or is asked for)
                        ctrl = "control" in arms or store.has(key, "control", seed)
                        shared = control_point(args.smoke) if ctrl else None
                        points = [ORACLE_PREFIX + name for name, _ in oracle_points(args.smoke) if name != shared]
                        jobs += [(a, data[task.name], seed) for a in points if not store.has(key, a, seed)]
                elif not store.has(key, arm, seed):
                    jobs.append((arm, data[task.name], seed))
    if args.report:
        print(f"{len(jobs)} (task, arm, seed) runs still to do; the table of what is done:", flush=True)
        jobs = []
    else:
        print(f"{len(jobs)} (task, arm, seed) runs to do (an oracle point is one); results in {store.root}", flush=True)
    failed = 0
    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        futures = {
            pool.submit(job, a, d, s, args.out, args.smoke, args.keep_checkpoints, variants): (a, d, s)
            for a, d, s in jobs
        }
        for future in as_completed(futures):
            arm, d, seed = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # one arm's failure is reported; the others' results stand
                failed += 1
                why = str(exc) if isinstance(exc, (ArmError, CheckpointError, OSError)) else repr(exc)
                print(f"{d.task.name} {arm} seed {seed}: FAILED: {why}", file=sys.stderr, flush=True)
                continue
            store.put(result)
            print(
                f"{d.task.name} {arm} seed {seed}: test objective {result['test_objective']:.4f} "
                f"({result['steps']} steps, {result['wall_s'] / 60:.1f} min)",
                flush=True,
            )
    if "oracle" in arms:
        for task in tasks:
            assemble_oracle(store, f"{task.name}-{task.digest()}", seeds[0], args.smoke)
    results = store.all(f"{t.name}-{t.digest()}" for t in tasks)
    shown = [*arms, *sorted({r["arm"] for r in results} - set(arms))]  # variants measured earlier too
    summary = summarise(results, shown)
    print()
    print(table(summary))
    runs = store.runs(f"{t.name}-{t.digest()}" for t in tasks)
    commits = sorted({str(r.get("commit", "unknown")) for r in runs})
    print(
        f"code: {', '.join(commits) or '-'}"
        + (" (results of several commits: compare with care)" if len(commits) > 1 else "")
    )
    print(cost(runs, max(1, args.parallel), len(seeds)))
    print(selection_line(aggregate(summary, shown, "selection_ratio")))
    print(result_line(aggregate(summary, shown)))
    return 1 if failed else 0


def cost(runs: list[dict[str, Any]], parallel: int, seeds: int) -> str:
    """What the pass cost: every trained run's wall time (each oracle point once; the one that is
    the control's run not twice) over the runs side by side, and a full pass of three seeds
    projected from it (the six arms again per extra seed, at this seed's times)."""
    done = [r for r in runs if not (r["arm"].startswith(ORACLE_PREFIX) and r.get("run_dir") in _control_dirs(runs))]
    total_h = sum(r["wall_s"] for r in done) / 3600
    per_seed_h = sum(r["wall_s"] for r in done if not r["arm"].startswith(ORACLE_PREFIX)) / 3600
    full_h = total_h + (3 - seeds) * per_seed_h if seeds < 3 else total_h
    return (
        f"cost: {len(done)} runs, {total_h:.2f} h of run time, {total_h / parallel:.2f} h at {parallel} side by side; "
        f"a 3-seed pass about {full_h / parallel:.2f} h (the six arms' times again per extra seed)"
    )


def _control_dirs(runs: list[dict[str, Any]]) -> set[str]:
    return {r["run_dir"] for r in runs if r["arm"] == "control"}


if __name__ == "__main__":
    sys.exit(main())
