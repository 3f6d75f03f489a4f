"""Read-only questions about the folded state that several actors ask: steps spent, the trainer's
announcement, a trial's segments, the champion's curve and the training phase.

    spent = steps_spent(state)                 # every segment counts, forks included
    announced = announced_hparams(state)       # None until a worker said what it can do
    curve = champion_curve(state)              # [(round, objective, diagonality)] of each round's winner
    phase_of(curve[1:])                        # alignment, learning or fine_tuning
    final_test(state), final_test_due(state)   # the end-of-run test measurement, and whether it is awaited

A segment's result is the trainer's ``val_objective`` and attention ``diagonality``; when
the trainer keeps averaged weights it reports them as ``ema_*`` too, and those are read
(``read_result``). A missing or non-finite objective reads +inf, a non-finite diagonality 0.
What the numbers mean for comparing candidates is ``actors/tuner/objectives.py``.

The training phase (read by the stop controller's patience, the forks strategy's
cool-down without a step budget and the live view): ``alignment`` while the champion's
diagonality is under ``ALIGNED``, ``fine_tuning`` once the last three decided rounds gained
under ``FINE_TUNING_GAIN`` together, ``learning`` in between.

Pure functions of the state. Imports the standard library and ``state`` only (never
actors/, trainer/, torch or zmq).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..protocol import metrics as mx
from .model import ChampionTest, Segment, TunerState

OBJECTIVE = mx.VAL_OBJECTIVE
DIAGONALITY = mx.DIAGONALITY
FR_GATE_STOP_RATE = mx.FR_GATE_STOP_RATE
ALIGNED = 0.9
FINE_TUNING_GAIN = 0.01


def steps_spent(state: TunerState) -> int:
    """Training steps the run has used or committed to: every segment counts, forks included."""
    total = 0
    for seg in state.tuning.segments.values():
        if seg.status == "failed":
            total += max(0, (seg.last_step or seg.start_step) - seg.start_step)
        else:
            total += seg.steps
    return total


def seconds_per_step(state: TunerState) -> float | None:
    """Wall seconds per training step over the finished segments (None before the first one)."""
    done = [s for s in state.tuning.segments.values() if s.status == "finished" and s.duration_s and s.steps]
    steps = sum(s.steps for s in done)
    return sum(s.duration_s or 0.0 for s in done) / steps if steps else None


def eta_s(state: TunerState, budget_steps: int | None) -> float | None:
    """Seconds until the step budget is spent at the pace so far (None: no budget, no pace yet, or over)."""
    per_step = seconds_per_step(state)
    if budget_steps is None or per_step is None or state.control.status is not None:
        return None
    return max(0, budget_steps - steps_spent(state)) * per_step


def announced_hparams(state: TunerState) -> Mapping[str, Any] | None:
    """The trainer's hyperparameter announcement (type, range, default, class by name), from its first worker."""
    workers = sorted(state.tuning.workers.values(), key=lambda w: w.worker_id)
    return workers[0].hparams if workers else None


def segments_of(state: TunerState, trial_id: str) -> list[Segment]:
    return sorted((s for s in state.tuning.segments.values() if s.trial_id == trial_id), key=lambda s: s.scheduled_seq)


def read_result(metrics: Mapping[str, float]) -> tuple[float, float]:
    """``(objective, diagonality)`` of a segment's metrics: the averaged model's (``ema_*``) when reported."""
    prefix = "ema_" if f"ema_{OBJECTIVE}" in metrics else ""
    objective = float(metrics.get(prefix + OBJECTIVE, math.inf))
    if not math.isfinite(objective):
        objective = math.inf
    diagonality = float(metrics.get(prefix + DIAGONALITY, metrics.get(DIAGONALITY, 0.0)))
    return objective, diagonality if math.isfinite(diagonality) else 0.0


def read_gate_stop_rate(metrics: Mapping[str, float]) -> float | None:
    """The free-running gate stop rate of a segment's metrics (the averaged model's when reported); None
    when the trainer does not report one. A non-finite rate reads 0."""
    prefix = "ema_" if f"ema_{OBJECTIVE}" in metrics and f"ema_{FR_GATE_STOP_RATE}" in metrics else ""
    rate = metrics.get(prefix + FR_GATE_STOP_RATE)
    if rate is None:
        return None
    return float(rate) if math.isfinite(rate) else 0.0


# Stops after which the champion is not measured again: an operator wants the run over now, and an
# actor that gave up may be the one that measures.
NO_FINAL_TEST = frozenset({"operator", "actor_failure"})


def final_test(state: TunerState) -> ChampionTest | None:
    """The end-of-run measurement of the champion on the test set (``ChampionTested`` with ``final``)."""
    champion = state.tuning.champion
    for test in reversed(state.tuning.tests):
        if test.final and champion is not None and test.segment_id == champion.segment_id:
            return test
    return None


def final_test_due(state: TunerState) -> bool:
    """A stop is decided, the champion is to be measured on the test set and has not been yet (a run
    with a test set waits for it; ``actors/tester.py``)."""
    stop, champion = state.control.stop, state.tuning.champion
    if state.control.phase != "stopping" or stop is None or stop.rule in NO_FINAL_TEST:
        return False
    return champion is not None and bool(champion.checkpoint) and final_test(state) is None


def champion_curve(state: TunerState) -> list[tuple[int, float, float]]:
    """``(round, objective, diagonality)`` of each decided round's winner, in round order."""
    out = []
    for rnd in state.tuning.rounds:
        if rnd.winner is None:
            continue
        segs = [s for s in state.tuning.segments.values() if s.trial_id == rnd.winner and s.status == "finished"]
        if segs:
            last = max(segs, key=lambda s: s.scheduled_seq)
            objective, diagonality = read_result(last.metrics)
            out.append((rnd.round, objective, diagonality))
    return out


def phase_of(curve: Sequence[tuple[int, float, float]]) -> str:
    if not curve or curve[-1][2] < ALIGNED:
        return "alignment"
    if len(curve) >= 4 and curve[-4][1] > 0 and (curve[-4][1] - curve[-1][1]) / curve[-4][1] < FINE_TUNING_GAIN:
        return "fine_tuning"
    return "learning"
