"""The suite's results: one JSON file per (task, arm, seed), measured on the test set, and the table.

    store = ResultStore(out / "results")
    store.has(task, "forks", 1); store.put(result); store.all()
    print(table(results)); print(result_line(results))

A result is written atomically as soon as its arm has been measured, so an interrupted
pass loses at most the runs in flight, and a rerun continues with the missing ones.

The table: per task and arm, means over the seeds of the **test** objective (the unweighted
validation objective measured on the test utterances; the averaged model's when it keeps
one), its ratio to the control's (and, as ``sel``, the answer's *selection* objective over the
control's: what decisions, and a screen of defaults, may look at), test diagonality, and
free-running on the test sentences the gate stop rate, diagonality, length ratio and
MCD-DTW; the steps the arm's lineage needed to reach the control's final test objective (its
validations are at segment ends, so an upper bound; '-' if it never did), and the wall time.
Then, per arm, the geometric mean of its ratio over the tasks and its worst task.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, task_key: str, arm: str, seed: int) -> Path:
        return self.root / task_key / arm / f"seed{seed}.json"

    def has(self, task_key: str, arm: str, seed: int) -> bool:
        return self.path(task_key, arm, seed).is_file()

    def put(self, result: dict[str, Any]) -> None:
        path = self.path(result["task_key"], result["arm"], result["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def runs(self, task_keys: Iterable[str]) -> list[dict[str, Any]]:
        """Every trained run's result: the arms' and the oracle's points' (not the oracle's assembled one)."""
        out = []
        for key in task_keys:
            for path in sorted((self.root / key).glob("*/seed*.json")):
                if path.parent.name != "oracle":
                    out.append(json.loads(path.read_text(encoding="utf-8")))
        return out

    def all(self, task_keys: Iterable[str]) -> list[dict[str, Any]]:
        out = []
        for key in task_keys:
            for path in sorted((self.root / key).glob("*/seed*.json")):
                if "." not in path.parent.name:  # an oracle point's own result: in the oracle's
                    out.append(json.loads(path.read_text(encoding="utf-8")))
        return out


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def steps_to_reach(lineage: Sequence[Sequence[float]], target: float) -> int | None:
    return next((int(spent) for spent, objective in lineage if objective <= target), None)


def summarise(results: list[dict[str, Any]], arms: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{task: {arm: row}}`` with the means over seeds and the ratio to the control."""
    by_task: dict[str, dict[str, dict[str, Any]]] = {}
    for task in dict.fromkeys(r["task"] for r in results):
        mine = [r for r in results if r["task"] == task]
        controls = {r["seed"]: r for r in mine if r["arm"] == "control"}
        control_mean = _mean([r["test_objective"] for r in controls.values()])
        control_sel = _mean([r["selection_objective"] for r in controls.values()])
        rows: dict[str, dict[str, Any]] = {}
        for arm in arms:
            runs = [r for r in mine if r["arm"] == arm]
            if not runs:
                continue
            reach = []
            for r in runs:
                control = controls.get(r["seed"]) or next(iter(controls.values()), None)
                if control is not None:
                    reach.append(steps_to_reach(r["lineage"], control["test_objective"]))
            objective = _mean([r["test_objective"] for r in runs])
            rows[arm] = {
                "seeds": len(runs),
                "test_objective": objective,
                "ratio": objective / control_mean if control_mean > 0 else math.nan,
                # what the decisions could see: the answer's selection objective over the control's
                "selection_ratio": _mean([r["selection_objective"] for r in runs]) / control_sel
                if control_sel > 0
                else math.nan,
                "diagonality": _mean([r["test_diagonality"] for r in runs]),
                "fr_gate_stop_rate": _mean([r["test"].get("fr_gate_stop_rate", math.nan) for r in runs]),
                "fr_mcd_dtw": _mean([r["test"].get("fr_mcd_dtw", math.nan) for r in runs]),
                "fr_diagonality": _mean([r["test"].get("fr_diagonality", math.nan) for r in runs]),
                "fr_length_ratio": _mean([r["test"].get("fr_length_ratio", math.nan) for r in runs]),
                "steps_to_control": None if not reach or None in reach else _mean([float(x) for x in reach]),
                "wall_min": _mean([r["wall_s"] / 60 for r in runs]),
                "steps": _mean([r["steps"] for r in runs]),
            }
        by_task[task] = rows
    return by_task


def table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    head = f"{'task':<10} {'arm':<10} {'seeds':>5} {'test obj':>9} {'ratio':>6} {'sel':>6} {'diag':>5} {'fr stop':>7} "
    head += f"{'fr diag':>7} {'fr len':>6} {'fr MCD':>7} {'to ctrl':>8} {'steps':>6} {'wall min':>8}"
    lines.append(head)
    for task, rows in summary.items():
        for arm, row in rows.items():
            reach = "-" if row["steps_to_control"] is None else f"{row['steps_to_control']:.0f}"
            lines.append(
                f"{task:<10} {arm:<10} {row['seeds']:>5} {row['test_objective']:>9.4f} {row['ratio']:>6.3f} "
                f"{row['selection_ratio']:>6.3f} "
                f"{row['diagonality']:>5.2f} {row['fr_gate_stop_rate']:>7.2f} {row['fr_diagonality']:>7.2f} "
                f"{row['fr_length_ratio']:>6.2f} {row['fr_mcd_dtw']:>7.2f} "
                f"{reach:>8} {row['steps']:>6.0f} {row['wall_min']:>8.1f}"
            )
    return "\n".join(lines)


def aggregate(
    summary: dict[str, dict[str, dict[str, Any]]], arms: Sequence[str], column: str = "ratio"
) -> dict[str, tuple[float, float]]:
    """Per arm (the control left out): the geometric mean of its ratio over the tasks, and the worst
    (``column="selection_ratio"``: of the selection objective's ratio, for a screen of defaults)."""
    out = {}
    for arm in arms:
        ratios = [rows[arm][column] for rows in summary.values() if arm in rows and rows[arm][column] > 0]
        if arm != "control" and ratios:
            out[arm] = (math.exp(statistics.fmean(math.log(x) for x in ratios)), max(ratios))
    return out


def selection_line(aggregates: dict[str, tuple[float, float]]) -> str:
    parts = [f"{arm} {geo:.3f} (worst {worst:.3f})" for arm, (geo, worst) in aggregates.items()]
    return "selection split, geometric mean of the ratio to the control (what a screen may decide on): " + ", ".join(
        parts
    )


def result_line(aggregates: dict[str, tuple[float, float]]) -> str:
    parts = [f"geo_{arm}={geo:.3f} worst_{arm}={worst:.3f}" for arm, (geo, worst) in aggregates.items()]
    return "RESULT " + " ".join(parts)
