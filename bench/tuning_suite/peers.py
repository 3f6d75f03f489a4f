"""The peers: what a user would otherwise run, on our trainer, at the same total steps.

    run = run_peer("optuna_hb", data, seed=1, out=Path(...))     # or "ray_pbt"

* ``ray_pbt``: Ray Tune's ``PopulationBasedTraining`` (the real ``ray[tune]``), population 4,
  each member ``budget / 4`` steps reported every ``interval`` steps (the product's pbt
  interval, 50, or a third of a member's steps on a short budget), mutating the default
  search space (learning rate, the four dropouts, Adam beta2) as Ray's docs show:
  ``hyperparam_mutations`` with resampling 25 % of the time, quantile 0.25. Member 0
  starts at the defaults, the others at points drawn from the space (as our ``pbt`` does).
  One CPU: the members take turns (Ray pauses and resumes them from their checkpoints).
* ``optuna_hb``: Optuna's TPE sampler with the real ``HyperbandPruner``, trials from
  scratch, each reporting its selection objective every ``rung`` steps
  (``trial.report`` / ``trial.should_prune``), at most ``budget / 4`` steps each, new trials
  until the budget is spent (the last one is cut where the budget ends). It runs in a process
  of its own (its training must not share torch's RNG with the suite's measurements).

Both decide on the selection set only (the trainer's validation at each report) and answer
with the checkpoint of their best selection objective. Both live in the optional extra
``pip install -e '.[bench]'``; neither is a runtime dependency of Smart Tuner.

Imports the standard library, torch (through the trainer), optuna and, in ``ray_pbt``, ray.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from smart_tuner.state.queries import read_result
from smart_tuner.trainer.config import TrainerConfig
from smart_tuner.trainer.harness import Trainer
from smart_tuner.trainer.hparams import preset

from .arms import ArmError, ArmRun, start_hparams
from .tasks import Task, TaskData

POPULATION = 4
_RAY = threading.Lock()  # one Ray session per process: the suite's threads take turns with it
PBT_INTERVAL = 50  # the product's pbt.interval_steps
HB_MAX_SHARE = 4  # a trial trains at most budget / 4 steps (as a PBT member does)
HB_RUNGS = 10  # ... reporting every max / 10 steps (Hyperband's min resource)
SPACE = {  # the product's default search space (state/config/schema.py)
    "learning_rate": ("log", 1e-4, 3e-2),
    "p_encoder_dropout": ("float", 0.0, 0.5),
    "p_postnet_dropout": ("float", 0.0, 0.5),
    "p_attention_dropout": ("float", 0.0, 0.3),
    "p_decoder_dropout": ("float", 0.0, 0.3),
    "adam_beta2": ("choice", 0.98, 0.999),
}


def make_trainer(data: TaskData, hparams: dict[str, Any], out: Path) -> Trainer:
    """The trainer the product's worker would build for this task (same data, split and start)."""
    config = TrainerConfig(
        dataset=data.tuner_dir,
        val_count=data.task.n_select,
        val_batch_size=min(16, data.task.n_select),
        output_dir=out,
        threads=1,
    )
    return Trainer(config, preset(data.task.preset).replace(**hparams))


# --- Optuna TPE + Hyperband ------------------------------------------------------------------


def run_optuna_hb(data: TaskData, seed: int, out: Path) -> ArmRun:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.monotonic()
    budget = data.task.budget
    max_steps = max(1, budget // HB_MAX_SHARE)
    rung = max(1, max_steps // HB_RUNGS)
    start = start_hparams(data, seed)
    trainer = make_trainer(data, start, out / "trainer")
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=HB_RUNGS, reduction_factor=3),
    )
    study.enqueue_trial({k: start.get(k, trainer.initial_hp.to_dict()[k]) for k in SPACE})  # the defaults first
    spent, best, lineage = 0, math.inf, []
    while spent < budget:
        trial = study.ask()
        params = {name: _suggest(trial, name, spec) for name, spec in SPACE.items()}
        checkpoint, sha, done, value = None, None, 0, math.inf
        for report in range(1, HB_RUNGS + 1):
            steps = min(rung, budget - spent)
            if steps <= 0:
                break
            result = trainer.run_segment(f"t{trial.number}-r{report}", checkpoint, sha, params, steps=steps)
            spent, done = spent + steps, done + steps
            if checkpoint is not None and checkpoint != result.checkpoint and not _kept(checkpoint, lineage):
                _remove(checkpoint)
            checkpoint, sha = result.checkpoint, result.sha256
            value = read_result(result.metrics)[0]
            if value < best:
                best = value
                lineage.append((spent, checkpoint))
            trial.report(value, report)
            if trial.should_prune():
                break
        pruned = done < rung * HB_RUNGS and spent < budget
        study.tell(trial, None if pruned else value, state=optuna.trial.TrialState.PRUNED if pruned else None)
        if checkpoint is not None and not _kept(checkpoint, lineage):
            _remove(checkpoint)
    if not lineage:
        raise ArmError("optuna_hb: no trial reported a finite objective")
    return ArmRun(
        lineage=list(lineage),
        selection_objective=best,
        steps=spent,
        wall_s=time.monotonic() - t0,
        detail={"trials": len(study.trials), "best_params": study.best_params if study.best_trials else None},
    )


def _suggest(trial: Any, name: str, spec: tuple[str, Any, Any]) -> Any:
    kind, low, high = spec
    if kind == "log":
        return trial.suggest_float(name, low, high, log=True)
    if kind == "float":
        return trial.suggest_float(name, low, high)
    return trial.suggest_categorical(name, [low, high])


def _kept(path: Path, lineage: list[tuple[int, Path]]) -> bool:
    return any(p == path for _, p in lineage)


def _remove(path: Path) -> None:
    for p in (path, path.with_suffix(".pt.sha256"), path.with_suffix(".alignment.png")):
        p.unlink(missing_ok=True)


# --- Ray Tune PBT -----------------------------------------------------------------------------


def _pbt_member(config: dict[str, Any]) -> None:
    """One PBT member in a Ray worker: train ``interval`` steps, report, checkpoint, until stopped."""
    import tempfile

    from ray import tune

    data, hparams = config["__data"], {k: v for k, v in config.items() if not k.startswith("__")}
    own = Path(config["__out"]) / "members" / tune.get_context().get_trial_id()
    trainer = make_trainer(data, {**config["__start"], **hparams}, own)
    checkpoint: Path | None = None
    sha: str | None = None
    if (restored := tune.get_checkpoint()) is not None:  # a restart, or an exploit of a better member
        with restored.as_directory() as folder:
            checkpoint = own / f"restored-{time.monotonic_ns()}.pt"
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(folder) / "member.pt", checkpoint)
            sha = (Path(folder) / "member.sha256").read_text().strip()
    while True:
        result = trainer.run_segment("member", checkpoint, sha, hparams, steps=config["__interval"])
        checkpoint, sha = result.checkpoint, result.sha256
        with tempfile.TemporaryDirectory(dir=own) as folder:
            shutil.copy(result.checkpoint, Path(folder) / "member.pt")
            (Path(folder) / "member.sha256").write_text(result.sha256)
            value = read_result(result.metrics)[0]
            tune.report({"objective": value}, checkpoint=tune.Checkpoint(folder))


def run_ray_pbt(data: TaskData, seed: int, out: Path) -> ArmRun:
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    t0 = time.monotonic()
    per_member = max(1, data.task.budget // POPULATION)
    interval = min(PBT_INTERVAL, max(1, per_member // 3))  # at least three reports, two chances to exploit
    iterations = max(1, per_member // interval)
    mutations = {
        name: (
            tune.loguniform(low, high) if kind == "log" else tune.uniform(low, high) if kind == "float" else [low, high]
        )
        for name, (kind, low, high) in SPACE.items()
    }
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=1,
        hyperparam_mutations=mutations,
        quantile_fraction=0.25,
        resample_probability=0.25,
    )
    random.seed(seed)  # PBT draws its perturbations from Python's random in this (the driver) process
    start = start_hparams(data, seed)
    out.mkdir(parents=True, exist_ok=True)
    bench_dir = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join([bench_dir, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        defaults = {k: start.get(k, preset(data.task.preset).to_dict()[k]) for k in SPACE}
        param_space = {
            # members 1-3 drawn from the space, member 0 at the defaults (as our pbt does)
            **{k: tune.choice(v) if isinstance(v, list) else v for k, v in mutations.items()},
            "__data": data,
            "__start": start,
            "__out": str(out),
            "__interval": interval,
        }
        tuner = tune.Tuner(
            tune.with_resources(_pbt_member, {"cpu": 1}),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric="objective",
                mode="min",
                num_samples=POPULATION,
                scheduler=scheduler,
                search_alg=BasicVariantGenerator(points_to_evaluate=[defaults], random_state=seed),
            ),
            run_config=tune.RunConfig(
                name="pbt", storage_path=str(out / "ray"), stop={"training_iteration": iterations}, verbose=0
            ),
        )
        grid = tuner.fit()
        best = grid.get_best_result(metric="objective", mode="min", scope="last")
        if best.checkpoint is None:
            raise ArmError("ray_pbt: the best member left no checkpoint")
        with best.checkpoint.as_directory() as folder:
            answer = out / "answer.pt"
            shutil.copy(Path(folder) / "member.pt", answer)
            sha = (Path(folder) / "member.sha256").read_text().strip()
        answer.with_name(answer.name + ".sha256").write_text(f"{sha}  {answer.name}\n")
        steps = sum(int(r.metrics.get("training_iteration", 0)) * interval for r in grid)
    finally:
        ray.shutdown()
    return ArmRun(
        lineage=[(steps, answer)],
        selection_objective=float(best.metrics["objective"]),
        steps=steps,
        wall_s=time.monotonic() - t0,
        detail={"best_config": {k: best.config[k] for k in SPACE}, "interval": interval, "iterations": iterations},
    )


def run_optuna_hb_apart(data: TaskData, seed: int, out: Path) -> ArmRun:
    """``run_optuna_hb`` in a process of its own: its training draws dropout from torch's process-wide
    RNG, which the suite's own thread needs undisturbed for its seeded test measurements."""
    out.mkdir(parents=True, exist_ok=True)
    spec = {"task": asdict(data.task), "tuner_dir": str(data.tuner_dir), "test_dir": str(data.test_dir)}
    spec |= {"n_visible": data.n_visible, "n_test": data.n_test, "seed": seed, "out": str(out)}
    (out / "peer.json").write_text(json.dumps(spec, default=str))
    bench = str(Path(__file__).resolve().parents[1])
    code = f"import sys; sys.path.insert(0, {bench!r}); from tuning_suite.peers import _apart; _apart()"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out / "peer.json")], capture_output=True, text=True, timeout=12 * 3600
    )
    if proc.returncode != 0:
        raise ArmError(f"optuna_hb exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    done = json.loads((out / "result.json").read_text())
    return ArmRun(
        lineage=[(int(steps), Path(path)) for steps, path in done["lineage"]],
        selection_objective=float(done["selection_objective"]),
        steps=int(done["steps"]),
        wall_s=float(done["wall_s"]),
        detail=done["detail"],
    )


def _apart() -> None:
    """The child of ``run_optuna_hb_apart``."""
    import torch

    torch.set_num_threads(1)
    spec = json.loads(Path(sys.argv[1]).read_text())
    data = TaskData(
        Task(**spec["task"]), Path(spec["tuner_dir"]), Path(spec["test_dir"]), spec["n_visible"], spec["n_test"]
    )
    out = Path(spec["out"])
    run = run_optuna_hb(data, int(spec["seed"]), out)
    done = {
        "lineage": [[steps, str(path)] for steps, path in run.lineage],
        "selection_objective": run.selection_objective,
        "steps": run.steps,
        "wall_s": run.wall_s,
        "detail": run.detail,
    }
    (out / "result.json").write_text(json.dumps(done, default=str))


def run_peer(arm: str, data: TaskData, seed: int, out: Path) -> ArmRun:
    try:
        if arm == "optuna_hb":
            return run_optuna_hb_apart(data, seed, out)
        if arm == "ray_pbt":
            with _RAY:
                return run_ray_pbt(data, seed, out)
    except ImportError as exc:
        raise ArmError(f"{arm} needs the bench extra: pip install -e '.[bench]' ({exc})") from None
    raise ArmError(f"unknown peer {arm!r}")


if __name__ == "__main__":  # pragma: no cover - not a script
    sys.exit("run bench/suite.py")
