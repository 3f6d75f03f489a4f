"""The suite's arms: how each one trains a task, at equal total steps, from the same start.

    run = run_arm("forks", data, seed=1, out=Path("suite-out/runs/demo/forks-seed1"))
    run.lineage      # [(steps spent, checkpoint)] of the answer's lineage, the last one the answer

Every arm starts from the practitioner's defaults (``START``: NVIDIA's published values
with ESPnet's guided attention, at the task's batch) and the task's seed, and may spend
the task's budget of training steps in all (every fork, probe and failed segment counted):

* ``control``: ``strategy: none``, the defaults for the whole budget;
* ``forks``, ``pbt``, ``trials``: whole ``run_tuner.py run`` runs of the product with its
  default config for that strategy, unchanged across tasks;
* ``oracle``: a grid over the default search space's main axes (3 learning rates x 2
  regularisation levels: the defaults' dropouts and Adam beta2, or those a third of the way
  to their low end), each point with the full budget (so 6x the steps in all), one seed;
  the point with the best *selection* objective is the oracle's answer;
* ``ray_pbt``, ``optuna_hb``: the peers, Ray Tune's PBT and Optuna's TPE with Hyperband, as
  their users would run them on our trainer (``tuning_suite/peers.py``);
* variants (``--variant NAME=STRATEGY:key=value,...``): a product strategy with some of its
  default config changed, the screen a new default is chosen by (on the selection column).

An arm's answer is the checkpoint it would hand a user: the champion (the control's last
checkpoint). Its lineage (the round winners' checkpoints with the steps spent when each was
made) gives the steps an arm needed to reach the control's final test objective.

Imports the standard library, PyYAML and the product's command line (as a process) only.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .tasks import TaskData

ROOT = Path(__file__).resolve().parents[2]
START: dict[str, Any] = {
    "learning_rate": 1e-3,
    "weight_decay": 1e-6,
    "grad_clip_thresh": 1.0,
    "p_attention_dropout": 0.1,
    "p_decoder_dropout": 0.1,
    "guided_attn_weight": 1.0,
    "guided_attn_sigma": 0.4,
}
PRODUCT = {"control": "none", "forks": "forks", "pbt": "pbt", "trials": "trials"}
PEERS = ("ray_pbt", "optuna_hb")  # tuning_suite/peers.py
ORACLE_LRS = (3e-4, 1e-3, 3e-3)
ORACLE_PREFIX = "oracle."
# the default search space's other axes, a third of the way from the preset's defaults to their low end
LOW_REGULARISATION = {
    "p_attention_dropout": 0.1 * 2 / 3,
    "p_decoder_dropout": 0.1 * 2 / 3,
    "p_encoder_dropout": 0.5 * 2 / 3,
    "p_postnet_dropout": 0.5 * 2 / 3,
    "adam_beta2": 0.98,
}
# Smoke: the same arms on a budget of a couple dozen steps; only to show the instrument works.
SMOKE_OVERRIDES = {
    "forks": {"warmup_steps": 4, "first_round_candidates": 2, "probe_steps": 4, "exploit_steps": 4},
    "pbt": {"population": 2, "interval_steps": 6},
    "n_trials": 3,
}


class ArmError(RuntimeError):
    """An arm's run failed; the message has the end of its error output."""


@dataclass(frozen=True)
class Variant:
    """A product strategy run with part of its default config changed: ``overrides`` maps dotted
    config keys (``forks.candidates``) to values."""

    name: str
    strategy: str
    overrides: dict[str, Any]


_VARIANT_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def parse_variant(spec: str, taken: set[str]) -> Variant:
    """``NAME=STRATEGY:key=value,key=value`` (values read as YAML scalars, ``a|b`` a list); refused by name
    when wrong."""
    name, sep, rest = spec.partition("=")
    strategy, colon, body = rest.partition(":")
    if not sep or not colon:
        raise ArmError(f"--variant {spec!r}: expected NAME=STRATEGY:key=value,... (e.g. c3=forks:forks.candidates=3)")
    if not _VARIANT_NAME.fullmatch(name) or name in taken or name.startswith("oracle"):
        raise ArmError(f"--variant {spec!r}: the name {name!r} must be new, lower-case letters, digits, - or _")
    if strategy not in ("forks", "pbt", "trials"):
        raise ArmError(f"--variant {spec!r}: the strategy must be forks, pbt or trials, got {strategy!r}")
    overrides: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", key):
            raise ArmError(f"--variant {spec!r}: {item!r} is not key=value with a dotted config key")
        try:  # "a|b" is a list (commas separate the key=value pairs)
            parts = [yaml.safe_load(v) for v in value.split("|")]
            overrides[key] = parts if "|" in value else parts[0]
        except yaml.YAMLError as exc:
            raise ArmError(f"--variant {spec!r}: the value of {key} is not a YAML scalar: {exc}") from None
    if not overrides:
        raise ArmError(f"--variant {spec!r}: no key=value given")
    return Variant(name, strategy, overrides)


def _override(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ArmError(f"variant key {key!r}: {part!r} is not a section")
        node[leaf] = value
    return config


@dataclass
class ArmRun:
    lineage: list[tuple[int, Path]]  # (steps spent, checkpoint); the last is the answer
    selection_objective: float  # the answer's objective on the selection set (what decided)
    steps: int  # training steps spent in all
    wall_s: float
    detail: dict[str, Any] = field(default_factory=dict)


def start_hparams(data: TaskData, seed: int) -> dict[str, Any]:
    return {**START, "batch_size": data.task.batch, "seed": seed, **data.audio, **data.task.hparams}


def product_config(strategy: str, data: TaskData, seed: int, hparams: dict[str, Any], smoke: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "strategy": strategy,
        "seed": seed,
        "budget": {"max_steps": data.task.budget},
        "trainer": {
            "preset": data.task.preset,
            "dataset": str(data.tuner_dir),
            "val_count": data.task.n_select,
            "threads": 1,
            "hparams": hparams,
        },
        "journal": {"fsync": False},
    }
    if smoke:
        config.update(SMOKE_OVERRIDES)
    return config


def _run_tuner(config: dict[str, Any], run_dir: Path, timeout_s: float) -> None:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir.parent / f"{run_dir.name}.yaml"  # not with_suffix: oracle points' names hold dots
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, str(ROOT / "run_tuner.py"), "run", "--config", str(cfg_path), "--run-dir", str(run_dir)]
    proc = subprocess.run([*cmd, "--log-level", "warning"], capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise ArmError(f"{run_dir.name}: run_tuner.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def read_run(run_dir: Path, wall_s: float) -> ArmRun:
    """The answer and its lineage from a finished run's ``tuner_state.yaml``."""
    state = yaml.safe_load((run_dir / "tuner_state.yaml").read_text())
    tuning = state["tuning"]
    champion = tuning["champion"]
    if champion is None:
        raise ArmError(f"{run_dir}: the run ended without a champion")
    winners = {r["winner"] for r in tuning["rounds"] if r.get("winner")}
    lineage, spent = [], 0
    for seg in sorted(tuning["segments"].values(), key=lambda s: s["scheduled_seq"]):
        spent += seg["steps"]
        if seg["trial_id"] in winners and seg["status"] == "finished" and seg.get("checkpoint"):
            lineage.append((spent, Path(seg["checkpoint"])))
    answer = Path(champion["checkpoint"])
    if not lineage or lineage[-1][1] != answer:
        lineage.append((spent, answer))
    segment = tuning["segments"][champion["segment_id"]]
    return ArmRun(
        lineage=lineage,
        selection_objective=float(segment["metrics"]["val_objective"]),
        steps=spent,
        wall_s=wall_s,
        detail={"champion_hparams": champion["hparams"], "summary": state["control"].get("summary")},
    )


def run_product(
    arm: str, data: TaskData, seed: int, out: Path, smoke: bool, hparams: dict[str, Any], variant: Variant | None = None
) -> ArmRun:
    t0 = time.monotonic()
    config = product_config(variant.strategy if variant else PRODUCT[arm], data, seed, hparams, smoke)
    if variant is not None:
        config = _override(config, variant.overrides)
    _run_tuner(config, out, timeout_s=12 * 3600)
    run = read_run(out, time.monotonic() - t0)
    if variant is not None:
        run.detail["variant"] = {"strategy": variant.strategy, "overrides": variant.overrides}
    return run


def oracle_points(smoke: bool) -> list[tuple[str, dict[str, Any]]]:
    lrs = ORACLE_LRS[1:] if smoke else ORACLE_LRS
    levels: list[tuple[str, dict[str, Any]]] = [("reg-default", {}), ("reg-low", LOW_REGULARISATION)]
    return [(f"lr{lr:g}-{name}", {"learning_rate": lr, **reg}) for lr in lrs for name, reg in levels]


def control_point(smoke: bool) -> str | None:
    """The oracle's grid point whose hyperparameters are the control's: at the control's seed it
    trains the same run step for step (measured: the same test objective to the last digit), so
    the suite takes the control's result for it instead of training it again."""
    for name, point in oracle_points(smoke):
        if all(START.get(k) == v for k, v in point.items()) and set(point) <= set(START):
            return name
    return None


def run_arm(
    arm: str, data: TaskData, seed: int, out: Path, smoke: bool = False, variants: dict[str, Variant] | None = None
) -> ArmRun:
    """Train ``data``'s task with ``arm`` from the defaults; the runs go under ``out``.

    The oracle runs as one arm per grid point, ``oracle.<point>`` (so its points can run side by
    side); ``best_point`` then picks its answer."""
    hparams = start_hparams(data, seed)
    if variants and arm in variants:
        return run_product(arm, data, seed, out, smoke, hparams, variants[arm])
    if arm in PRODUCT:
        return run_product(arm, data, seed, out, smoke, hparams)
    if arm.startswith(ORACLE_PREFIX):
        points = dict(oracle_points(smoke))
        name = arm[len(ORACLE_PREFIX) :]
        if name not in points:
            raise ArmError(f"unknown oracle point {name!r}")
        run = run_product("control", data, seed, out, smoke, {**hparams, **points[name]})
        run.detail["point"] = name
        return run
    if arm in PEERS:
        from .peers import run_peer

        return run_peer(arm, data, seed, out)
    raise ArmError(f"unknown arm {arm!r}")


def best_point(points: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The oracle's result from its points' results: the best *selection* objective's, with every
    point's steps and time counted."""
    name = min(points, key=lambda k: points[k]["selection_objective"])
    best = dict(points[name])
    best["arm"] = "oracle"
    best["steps"] = sum(p["steps"] for p in points.values())
    best["wall_s"] = sum(p["wall_s"] for p in points.values())
    best["detail"] = {"point": name, "selection": {k: p["selection_objective"] for k, p in points.items()}}
    return best
