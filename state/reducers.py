"""Pure reducers: ``apply(state, envelope) -> state``, one function per event type.

``fold.py`` folds a stream of events with them (``replay``, ``fold``, ``Folder``);
``ProgressRun`` here is the one ``MetricsObserved`` fold rule both use.

One function per event type, registered with ``@reducer(EventClass)``; an
event type without a reducer raises ``UnknownEvent`` and a transition that
makes no sense for the current state (a segment finishing that was never
scheduled, seq out of order) raises ``InvalidTransition``. The sequencer
applies every proposal before committing it, so a committed log only holds
valid transitions and replays without error.

Imports the standard library, ``protocol`` and ``state.model`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from ..protocol import Envelope, Message, all_specs
from ..protocol import messages as m
from .model import (
    RECENT_DECISIONS,
    Champion,
    ChampionTest,
    Decision,
    Incident,
    Progress,
    Round,
    RunInfo,
    Segment,
    StopInfo,
    StopRequest,
    Trial,
    TunerState,
    Tuning,
    Worker,
)


class ReducerError(Exception):
    """The event cannot be applied to this state."""


class UnknownEvent(ReducerError):
    pass


class InvalidTransition(ReducerError):
    pass


E = TypeVar("E", bound=Message)
# A reducer returns the top-level sections it changed; `apply` builds the new state once.
Changes = dict[str, Any]
Reducer = Callable[[TunerState, Any, int, float], Changes]
_REDUCERS: dict[str, Reducer] = {}


def reducer(cls: type[E]) -> Callable[[Callable[[TunerState, E, int, float], Changes]], Reducer]:
    def wrap(fn: Callable[[TunerState, E, int, float], Changes]) -> Reducer:
        _REDUCERS[cls.TYPE] = fn
        return fn

    return wrap


def changes_for(state: TunerState, seq: int, ts: float, message: Message) -> Changes:
    """The sections that ``message`` (committed as ``seq`` at ``ts``) changes in ``state``."""
    fn = _REDUCERS.get(message.TYPE)
    if fn is None:
        raise UnknownEvent(f"no reducer for event type {message.TYPE!r}")
    if state.run is None and type(message) is not m.RunStarted:
        raise InvalidTransition(f"{message.TYPE} before RunStarted: every run begins with RunStarted")
    changes = fn(state, message, seq, ts)
    if message.DECISION:
        reason: str = message.reason  # type: ignore[attr-defined]
        decisions = (*state.recent_decisions, Decision(seq=seq, ts=ts, type=message.TYPE, reason=reason))
        changes["recent_decisions"] = decisions[-RECENT_DECISIONS:]
    return changes


def apply(state: TunerState, env: Envelope) -> TunerState:
    """The state after ``env``; raises ReducerError if ``env`` cannot follow ``state``."""
    if env.seq != state.last_seq + 1:
        raise InvalidTransition(f"event seq {env.seq} does not follow the state's last seq {state.last_seq}")
    return replace(state, last_seq=env.seq, last_ts=env.ts, **changes_for(state, env.seq, env.ts, env.data))


class ProgressRun:
    """The ``MetricsObserved`` fold rule, written once: the reducer, ``Folder`` and so the
    sequencer all apply it. A run of metric events accumulates here; ``result`` builds one
    ``Progress``.
    """

    __slots__ = ("count", "last", "step")

    def __init__(self, progress: Progress) -> None:
        self.step = progress.global_step
        self.count = progress.metrics_observed
        self.last = dict(progress.last_metrics)

    def observe(self, step: int, metrics: Mapping[str, float]) -> None:
        if step > self.step:  # noqa: PLR1730 - a branch is cheaper than max() in replay's hot loop
            self.step = step
        self.count += 1
        self.last.update(metrics)

    def result(self) -> Progress:
        return Progress(global_step=self.step, metrics_observed=self.count, last_metrics=self.last)


def missing_reducers() -> list[str]:
    """Event types registered in the protocol that have no reducer (should be empty)."""
    return sorted(s.cls.TYPE for s in all_specs() if s.kind == "event" and s.cls.TYPE not in _REDUCERS)


def _segment(state: TunerState, segment_id: str) -> Segment:
    seg = state.tuning.segments.get(segment_id)
    if seg is None:
        raise InvalidTransition(f"segment {segment_id!r} was never scheduled")
    return seg


def _open_segment(state: TunerState, segment_id: str) -> Segment:
    seg = _segment(state, segment_id)
    if seg.status == "finished":
        raise InvalidTransition(f"segment {segment_id!r} has already finished")
    return seg


def _put_segment(tuning: Tuning, seg: Segment) -> Tuning:
    return replace(tuning, segments={**tuning.segments, seg.segment_id: seg})


def _put_trial(tuning: Tuning, trial: Trial) -> Tuning:
    return replace(tuning, trials={**tuning.trials, trial.trial_id: trial})


def _require_started(state: TunerState, what: str) -> None:
    if state.run is None:
        raise InvalidTransition(f"{what} before RunStarted")


# --- run lifecycle ------------------------------------------------------------------


@reducer(m.RunStarted)
def _run_started(state: TunerState, e: m.RunStarted, seq: int, ts: float) -> Changes:
    if state.run is not None:
        raise InvalidTransition(f"run {state.run.run_id} has already started")
    run = RunInfo(
        run_id=e.run_id,
        config_hash=e.config_hash,
        strategy=e.strategy,
        seed=e.seed,
        version=e.version,
        host=e.host,
        pid=e.pid,
        started_ts=ts,
        config=e.config,
    )
    return {"run": run, "control": replace(state.control, phase="running")}


@reducer(m.RunResumed)
def _run_resumed(state: TunerState, e: m.RunResumed, seq: int, ts: float) -> Changes:
    _require_started(state, "RunResumed")
    control = replace(
        state.control,
        phase="running",
        status=None,
        finish_reason=None,
        finished_ts=None,
        stop=None,
        stop_requests=(),
        ready_actors=(),
        resumes=state.control.resumes + 1,
    )
    # the time nobody ran it (from its last event to this resume) does not count against max_hours
    assert state.run is not None
    paused = max(0.0, ts - (state.last_ts if state.last_ts is not None else ts))
    run = replace(state.run, paused_s=state.run.paused_s + paused)
    # the earlier coordinator's workers went with it (they stop when their parent is gone)
    workers = {
        k: w if w.status == "lost" else replace(w, status="lost", lost_reason="coordinator restarted")
        for k, w in state.tuning.workers.items()
    }
    return {"control": control, "run": run, "tuning": replace(state.tuning, workers=workers)}


@reducer(m.ActorReady)
def _actor_ready(state: TunerState, e: m.ActorReady, seq: int, ts: float) -> Changes:
    ready = tuple(sorted({*state.control.ready_actors, e.actor}))
    return {"control": replace(state.control, ready_actors=ready)}


@reducer(m.StopRequested)
def _stop_requested(state: TunerState, e: m.StopRequested, seq: int, ts: float) -> Changes:
    _require_started(state, "StopRequested")
    req = StopRequest(seq=seq, source=e.source, reason=e.reason)
    return {"control": replace(state.control, stop_requests=(*state.control.stop_requests, req))}


@reducer(m.StopDecided)
def _stop_decided(state: TunerState, e: m.StopDecided, seq: int, ts: float) -> Changes:
    _require_started(state, "StopDecided")
    if state.control.phase != "running":
        raise InvalidTransition(f"StopDecided while the run is {state.control.phase}")
    stop = StopInfo(seq=seq, rule=e.rule, reason=e.reason, evidence=e.evidence)
    return {"control": replace(state.control, phase="stopping", stop=stop)}


@reducer(m.RunFinished)
def _run_finished(state: TunerState, e: m.RunFinished, seq: int, ts: float) -> Changes:
    _require_started(state, "RunFinished")
    if state.control.phase == "finished":
        raise InvalidTransition("the run has already finished")
    control = replace(
        state.control,
        phase="finished",
        status=e.status,
        finish_reason=e.reason,
        finished_ts=ts,
        summary=e.summary,
    )
    return {"control": control}


@reducer(m.ActorCrashed)
def _actor_crashed(state: TunerState, e: m.ActorCrashed, seq: int, ts: float) -> Changes:
    detail = f"{e.error} (restart {e.restarts}{', gave up' if e.gave_up else ''})"
    crash = Incident(seq=seq, kind="crash", subject=e.actor, detail=detail)
    return {"health": replace(state.health, crashes=(*state.health.crashes, crash))}


@reducer(m.ProtocolViolation)
def _protocol_violation(state: TunerState, e: m.ProtocolViolation, seq: int, ts: float) -> Changes:
    return {"health": replace(state.health, protocol_violations=state.health.protocol_violations + e.count)}


# --- segments and trials --------------------------------------------------------------


@reducer(m.SegmentScheduled)
def _segment_scheduled(state: TunerState, e: m.SegmentScheduled, seq: int, ts: float) -> Changes:
    _require_started(state, "SegmentScheduled")
    tuning = state.tuning
    if e.segment_id in tuning.segments:
        raise InvalidTransition(f"segment {e.segment_id!r} is already scheduled")
    if e.trial_id is not None and e.trial_id not in tuning.trials:
        raise InvalidTransition(f"segment {e.segment_id!r} names unknown trial {e.trial_id!r}")
    seg = Segment(
        segment_id=e.segment_id,
        trial_id=e.trial_id,
        status="scheduled",
        from_checkpoint=e.from_checkpoint,
        from_sha256=e.from_sha256,
        start_step=e.start_step,
        steps=e.steps,
        hparams=e.hparams,
        reason=e.reason,
        scheduled_seq=seq,
        report_every=e.report_every,
        eval_every=e.eval_every,
    )
    tuning = _put_segment(tuning, seg)
    if e.trial_id is not None and tuning.trials[e.trial_id].status == "proposed":
        tuning = _put_trial(tuning, replace(tuning.trials[e.trial_id], status="running"))
    return {"tuning": tuning}


@reducer(m.SegmentStarted)
def _segment_started(state: TunerState, e: m.SegmentStarted, seq: int, ts: float) -> Changes:
    seg = _open_segment(state, e.segment_id)
    seg = replace(seg, status="running", worker_id=e.worker_id, device=e.device, attempts=seg.attempts + 1)
    return {"tuning": _put_segment(state.tuning, seg)}


@reducer(m.HparamsApplied)
def _hparams_applied(state: TunerState, e: m.HparamsApplied, seq: int, ts: float) -> Changes:
    seg = _open_segment(state, e.segment_id)
    return {"tuning": _put_segment(state.tuning, replace(seg, applied=e.hparams))}


@reducer(m.MetricsObserved)
def _metrics_observed(state: TunerState, e: m.MetricsObserved, seq: int, ts: float) -> Changes:
    # The hot path: only the small progress section is rebuilt.
    run = ProgressRun(state.progress)
    run.observe(e.step, e.metrics)
    return {"progress": run.result()}


@reducer(m.SegmentFinished)
def _segment_finished(state: TunerState, e: m.SegmentFinished, seq: int, ts: float) -> Changes:
    seg = _open_segment(state, e.segment_id)
    seg = replace(
        seg,
        status="finished",
        end_step=e.end_step,
        last_step=e.end_step,
        metrics=e.metrics,
        checkpoint=e.checkpoint,
        checkpoint_sha256=e.checkpoint_sha256,
        duration_s=e.duration_s,
        failure=None,
        failure_detail=None,
    )
    progress = replace(state.progress, global_step=max(state.progress.global_step, e.end_step))
    return {"tuning": _put_segment(state.tuning, seg), "progress": progress}


@reducer(m.SegmentFailed)
def _segment_failed(state: TunerState, e: m.SegmentFailed, seq: int, ts: float) -> Changes:
    seg = _open_segment(state, e.segment_id)
    seg = replace(seg, status="failed", failure=e.reason, failure_detail=e.detail, last_step=e.step)
    return {"tuning": _put_segment(state.tuning, seg)}


@reducer(m.TrialProposed)
def _trial_proposed(state: TunerState, e: m.TrialProposed, seq: int, ts: float) -> Changes:
    _require_started(state, "TrialProposed")
    if e.trial_id in state.tuning.trials:
        raise InvalidTransition(f"trial {e.trial_id!r} was already proposed")
    trial = Trial(
        trial_id=e.trial_id,
        number=e.number,
        hparams=e.hparams,
        sampler=e.sampler,
        status="proposed",
        proposed_seq=seq,
    )
    return {"tuning": _put_trial(state.tuning, trial)}


@reducer(m.TrialPruned)
def _trial_pruned(state: TunerState, e: m.TrialPruned, seq: int, ts: float) -> Changes:
    trial = state.tuning.trials.get(e.trial_id)
    if trial is None:
        raise InvalidTransition(f"trial {e.trial_id!r} was never proposed")
    return {"tuning": _put_trial(state.tuning, replace(trial, status="pruned", value=e.value, pruned_step=e.step))}


@reducer(m.ChampionPromoted)
def _champion_promoted(state: TunerState, e: m.ChampionPromoted, seq: int, ts: float) -> Changes:
    _segment(state, e.segment_id)
    tuning = state.tuning
    old = tuning.champion
    if e.kept:  # the champion's hyperparameters stood; its lineage moved on to this checkpoint
        if old is None:
            raise InvalidTransition("cannot keep a champion before one was promoted")
        champion = replace(
            old,
            segment_id=e.segment_id,
            checkpoint=e.checkpoint,
            checkpoint_sha256=e.checkpoint_sha256,
            objective=e.objective,
            step=e.step,
            kept_count=old.kept_count + 1,
        )
        tuning = replace(tuning, champion=champion)
    else:
        champion = Champion(
            segment_id=e.segment_id,
            trial_id=e.trial_id,
            checkpoint=e.checkpoint,
            checkpoint_sha256=e.checkpoint_sha256,
            objective=e.objective,
            step=e.step,
            hparams=e.hparams,
            promoted_seq=seq,
        )
        tuning = replace(tuning, champion=champion, promotions=tuning.promotions + 1)
    if e.trial_id is not None and e.trial_id in tuning.trials:
        tuning = _put_trial(tuning, replace(tuning.trials[e.trial_id], status="evaluated", value=e.objective))
        last = tuning.rounds[-1] if tuning.rounds else None
        if last is not None and last.winner is None and e.trial_id in last.trials:
            tuning = replace(tuning, rounds=(*tuning.rounds[:-1], replace(last, winner=e.trial_id)))
    return {"tuning": tuning}


@reducer(m.RoundPlanned)
def _round_planned(state: TunerState, e: m.RoundPlanned, seq: int, ts: float) -> Changes:
    tuning = state.tuning
    if tuning.rounds and tuning.rounds[-1].winner is None:
        raise InvalidTransition(f"round {e.round} planned while round {tuning.rounds[-1].round} is undecided")
    if e.round != len(tuning.rounds):
        raise InvalidTransition(f"round {e.round} planned, but the next round is {len(tuning.rounds)}")
    unknown = [t for t in e.trials if t not in tuning.trials]
    if unknown or not e.trials:
        what = f"names unknown trials {unknown}" if unknown else "has no trials"
        raise InvalidTransition(f"round {e.round} {what}")
    if not e.rung_steps or len(e.keep) != len(e.rung_steps) or e.keep[-1] != 1:
        raise InvalidTransition(f"round {e.round}: rung_steps {e.rung_steps} and keep {e.keep} do not end in one")
    for trial_id, segment_id in e.starts.items():
        if trial_id not in e.trials:
            raise InvalidTransition(f"round {e.round}: a start for {trial_id!r}, which is not in the round")
        seg = tuning.segments.get(segment_id)
        if seg is None or seg.status != "finished" or not seg.checkpoint:
            raise InvalidTransition(f"round {e.round}: {trial_id} starts from {segment_id!r}, not a finished segment")
    rnd = Round(
        round=e.round,
        trials=e.trials,
        from_checkpoint=e.from_checkpoint,
        from_sha256=e.from_sha256,
        start_step=e.start_step,
        rung_steps=e.rung_steps,
        keep=e.keep,
        planned_seq=seq,
        starts=dict(e.starts),
    )
    return {"tuning": replace(tuning, rounds=(*tuning.rounds, rnd))}


# --- guard rails, rollbacks, alerts, workers --------------------------------------------


@reducer(m.GuardTripped)
def _guard_tripped(state: TunerState, e: m.GuardTripped, seq: int, ts: float) -> Changes:
    inc = Incident(
        seq=seq,
        kind=e.guard,
        subject=e.segment_id or "-",
        detail=f"{e.action}: {e.reason}",
        gave_up=e.gives_up,
        trial_id=e.trial_id,
    )
    changes: Changes = {"health": replace(state.health, guards=(*state.health.guards, inc))}
    if e.hparams and e.trial_id is not None:  # one trial's own trouble: that trial's later segments
        tuning = state.tuning
        trial = tuning.trials.get(e.trial_id)
        if trial is None:
            raise InvalidTransition(f"guard {e.guard} changes trial {e.trial_id!r}, which was never proposed")
        changes["tuning"] = _put_trial(tuning, replace(trial, adjustments={**trial.adjustments, **e.hparams}))
    elif e.hparams:
        tuning = state.tuning
        changes["tuning"] = replace(tuning, adjustments={**tuning.adjustments, **e.hparams})
    return changes


@reducer(m.RollbackPerformed)
def _rollback(state: TunerState, e: m.RollbackPerformed, seq: int, ts: float) -> Changes:
    inc = Incident(seq=seq, kind="rollback", subject=e.to_checkpoint, detail=f"to step {e.to_step}: {e.reason}")
    changes: Changes = {"health": replace(state.health, rollbacks=(*state.health.rollbacks, inc))}
    if e.segment_id is not None:
        seg = _segment(state, e.segment_id)
        if seg.status != "failed":
            raise InvalidTransition(f"rollback of segment {e.segment_id!r}, which has not failed")
        changes["tuning"] = _put_segment(state.tuning, replace(seg, rollback=dict(e.hparams)))
    return changes


@reducer(m.ChampionTested)
def _champion_tested(state: TunerState, e: m.ChampionTested, seq: int, ts: float) -> Changes:
    _segment(state, e.segment_id)
    test = ChampionTest(
        seq=seq,
        segment_id=e.segment_id,
        step=e.step,
        test_set=e.test_set,
        n_sentences=e.n_sentences,
        metrics=dict(e.metrics),
        final=e.final,
        samples=e.samples,
        error=e.error,
    )
    return {"tuning": replace(state.tuning, tests=(*state.tuning.tests, test))}


@reducer(m.AlertSent)
def _alert_sent(state: TunerState, e: m.AlertSent, seq: int, ts: float) -> Changes:
    h = state.health
    return {
        "health": replace(h, alerts_sent=h.alerts_sent + 1) if e.ok else replace(h, alerts_failed=h.alerts_failed + 1)
    }


@reducer(m.WorkerHello)
def _worker_hello(state: TunerState, e: m.WorkerHello, seq: int, ts: float) -> Changes:
    worker = Worker(
        worker_id=e.worker_id, pid=e.pid, device=e.device, status="connected", hparams=e.hparams, metrics=e.metrics
    )
    return {"tuning": replace(state.tuning, workers={**state.tuning.workers, e.worker_id: worker})}


@reducer(m.WorkerLost)
def _worker_lost(state: TunerState, e: m.WorkerLost, seq: int, ts: float) -> Changes:
    worker = state.tuning.workers.get(e.worker_id)
    if worker is None:
        raise InvalidTransition(f"worker {e.worker_id!r} never said hello")
    lost = replace(worker, status="lost", lost_reason=e.reason)
    return {"tuning": replace(state.tuning, workers={**state.tuning.workers, e.worker_id: lost})}
