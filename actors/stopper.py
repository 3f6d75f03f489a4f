"""The stop controller: decides when the run is done, and says why.

Consumes: ``StopRequested``; ``GuardTripped`` (a guard that gave up); ``ChampionPromoted``
and ``RoundPlanned`` (plateau, quality target, step budget); every event's committed
timestamp (the wall-clock budget: the clock readings are the envelopes' ``ts``, so replay
sees the same ones).
Emits: ``StopDecided`` with the rule, a sentence and the evidence.

Rules, first match wins:

* ``operator`` -- a ``stop`` command, SIGINT/SIGTERM or the dashboard asked.
* ``nothing_to_tune`` -- the configured strategy is not available in this build.
* ``guard`` -- a guard rail gave up (``GuardTripped`` with ``gives_up``: its corrections
  spent, or the next one out of the trainer's range, or an OOM at batch size 1).
* ``quality_target`` -- the champion's objective reached ``stop.target_objective`` with
  diagonality at least ``stop.target_diagonality``.
* ``budget_steps`` / ``budget_hours`` / ``budget_gpu_hours`` -- ``budget.*`` reached
  (hours: the time the run was running, not the time between a crash and its resume;
  GPU hours: every segment that held GPUs, finished or failed).
  The step budget stops once the last round is decided (the tuner plans rounds to end
  on it); the hour budgets stop at once (the supervisor aborts what is running).
* ``plateau`` -- ``patience`` decided rounds after the warm-up without a ``min_delta``
  gain of the champion's objective. The patience depends on the phase: doubled in the
  ``alignment`` phase (champion diagonality < 0.9: the loss moves little while the
  attention forms), as configured in ``learning``, halved (at least 1) in
  ``fine_tuning`` (the last three decided rounds gained under 1% together).

Imports ``protocol``, ``state`` and the runtime only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..protocol import Envelope
from ..protocol import messages as m
from ..protocol import metrics as mx
from ..state.model import TunerState
from ..state.queries import ALIGNED, champion_curve, phase_of, steps_spent
from .runtime import ActorCore, Out


class Stopper(ActorCore):
    name = "stopper"
    replays_history = True  # the GPU time of failed segments is folded here, from every event

    def __init__(self, *, available_strategies: frozenset[str]) -> None:
        self.available_strategies = available_strategies
        # A failed segment held its GPUs too, but records no duration: from its SegmentStarted's
        # committed ts to its SegmentFailed's, per attempt (replay sees the same clock readings).
        self._started: dict[str, tuple[float, str | None]] = {}
        self.failed_gpu_s = 0.0

    def observe(self, env: Envelope) -> None:
        msg = env.data
        if isinstance(msg, m.SegmentStarted):
            self._started[msg.segment_id] = (env.ts, msg.device)
        elif isinstance(msg, m.SegmentFailed) and msg.segment_id in self._started:
            started, device = self._started.pop(msg.segment_id)
            self.failed_gpu_s += max(0.0, env.ts - started) * _gpus(device)
        elif isinstance(msg, m.SegmentFinished):
            self._started.pop(msg.segment_id, None)

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        if isinstance(env.data, m.StopRequested):
            return self._operator_stop(state, env.data, env.seq)
        if isinstance(env.data, m.GuardTripped) and env.data.gives_up and env.data.trial_id is None:
            # (a guard giving up on one trial, not the lineage: the round engine prunes that trial)
            return self._guard_stop(state, env.data.guard, env.data.reason, env.data.action, env.seq)
        return self._check(state, env.ts)

    def resume(self, state: TunerState) -> Sequence[Out]:
        if state.control.phase != "running" or state.run is None:
            return ()
        if state.control.stop_requests:
            req = state.control.stop_requests[-1]
            return self._operator_stop(state, m.StopRequested(source=req.source, reason=req.reason), req.seq)
        gave_up = next((g for g in state.health.guards if g.gave_up), None)
        if gave_up is not None:
            return self._guard_stop(state, gave_up.kind, gave_up.detail, "", gave_up.seq)
        if state.run.strategy not in self.available_strategies:
            decided = m.StopDecided(
                rule="nothing_to_tune",
                reason=f"strategy {state.run.strategy!r} is not available in this build, so there is nothing to tune",
                evidence={"strategy": state.run.strategy, "available": sorted(self.available_strategies)},
            )
            return [Out(decided)]
        return self._check(state, state.last_ts or state.run.started_ts)

    def _operator_stop(self, state: TunerState, req: m.StopRequested, seq: int) -> Sequence[Out]:
        if state.control.phase != "running":
            return ()
        decided = m.StopDecided(
            rule="operator",
            reason=f"stop requested by {req.source}: {req.reason}",
            evidence={"source": req.source, "request_seq": seq, "global_step": state.progress.global_step},
        )
        return [Out(decided)]

    def _guard_stop(self, state: TunerState, guard: str, reason: str, action: str, seq: int) -> Sequence[Out]:
        if state.control.phase != "running":
            return ()
        decided = m.StopDecided(
            rule="guard",
            reason=f"guard {guard} has no correction left: {reason}",
            evidence={"guard": guard, "trip_seq": seq, "action": action, "global_step": state.progress.global_step},
        )
        return [Out(decided)]

    def _check(self, state: TunerState, now_ts: float) -> Sequence[Out]:
        if state.control.phase != "running" or state.run is None:
            return ()
        config = state.run.config
        for rule in (self._target, self._budget, self._plateau):
            decided = rule(state, config, now_ts)
            if decided is not None:
                return [Out(decided)]
        return ()

    def _target(self, state: TunerState, config: Mapping[str, Any], now_ts: float) -> m.StopDecided | None:
        stop = config.get("stop", {})
        target = stop.get("target_objective")
        curve = champion_curve(state)
        if target is None or not curve:
            return None
        _, objective, diag = curve[-1]
        need_diag = stop.get("target_diagonality", ALIGNED)
        if objective <= target and diag >= need_diag:
            return m.StopDecided(
                rule="quality_target",
                reason=f"the champion reached the target: objective {objective:.4f} <= {target:g} "
                f"with diagonality {diag:.2f} >= {need_diag:g}",
                evidence={
                    "objective": objective,
                    mx.DIAGONALITY: diag,
                    "target_objective": target,
                    "target_diagonality": need_diag,
                },
            )
        return None

    def _budget(self, state: TunerState, config: Mapping[str, Any], now_ts: float) -> m.StopDecided | None:
        budget = config.get("budget", {})
        max_steps, max_hours, max_gpu = budget.get("max_steps"), budget.get("max_hours"), budget.get("max_gpu_hours")
        assert state.run is not None
        if max_hours is not None:
            hours = (now_ts - state.run.started_ts - state.run.paused_s) / 3600  # time it was running
            if hours >= max_hours:
                return m.StopDecided(
                    rule="budget_hours",
                    reason=f"wall-clock budget reached: {hours:.2f} h of {max_hours:g} h",
                    evidence={"hours": round(hours, 4), "max_hours": max_hours, "clock_ts": now_ts},
                )
        if max_gpu is not None:
            finished_s = sum((s.duration_s or 0.0) * _gpus(s.device) for s in state.tuning.segments.values())
            gpu_h = (finished_s + self.failed_gpu_s) / 3600  # every segment that held a GPU, failed ones too
            if gpu_h >= max_gpu:
                return m.StopDecided(
                    rule="budget_gpu_hours",
                    reason=f"GPU budget reached: {gpu_h:.2f} of {max_gpu:g} GPU hours",
                    evidence={"gpu_hours": gpu_h, "max_gpu_hours": max_gpu},
                )
        if max_steps is not None:
            spent = steps_spent(state)
            rounds = state.tuning.rounds
            settled = bool(rounds) and rounds[-1].winner is not None
            if spent >= max_steps and settled:
                evidence = {"steps_spent": spent, "max_steps": max_steps, "global_step": state.progress.global_step}
                why = f"step budget spent: {spent} of {max_steps} steps (every fork counted)"
                return m.StopDecided(rule="budget_steps", reason=why, evidence=evidence)
        return None

    def _plateau(self, state: TunerState, config: Mapping[str, Any], now_ts: float) -> m.StopDecided | None:
        rounds = state.tuning.rounds
        if not rounds or rounds[-1].winner is None:
            return None
        stop = config.get("stop", {})
        min_delta, patience = float(stop.get("min_delta", 0.002)), int(stop.get("patience", 4))
        curve = champion_curve(state)[1:]  # after the warm-up
        phase = phase_of(curve)
        need = patience * 2 if phase == "alignment" else (max(1, patience // 2) if phase == "fine_tuning" else patience)
        if len(curve) <= need:
            return None
        best = curve[0][1]
        since = 0
        for _, objective, _ in curve[1:]:
            if objective < best - min_delta:
                best, since = objective, 0
            else:
                since += 1
        if since < need:
            return None
        recent = [round(o, 5) for _, o, _ in curve[-need - 1 :]]
        return m.StopDecided(
            rule="plateau",
            reason=f"no gain of {min_delta:g} in {since} rounds ({phase} phase, patience {need}): best {best:.4f}",
            evidence={"phase": phase, "patience": need, "min_delta": min_delta, "best": best, "recent": recent},
        )


def _gpus(device: str | None) -> int:
    """GPUs a segment held: ``cuda:0`` one, ``cuda:0 x2`` (a DDP trial, a script given two) two, the CPU none."""
    if not (device or "").startswith("cuda"):
        return 0
    found = re.search(r" x(\d+)$", device or "")
    return int(found.group(1)) if found else 1
