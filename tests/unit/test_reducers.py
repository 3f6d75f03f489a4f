"""The pure reducers: completeness, refused transitions, no mutation, and a realistic run's state."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from smart_tuner.actors.stopper import Stopper
from smart_tuner.protocol import Envelope, Message, all_specs
from smart_tuner.protocol import messages as m
from smart_tuner.state import reducers
from smart_tuner.state.fold import Folder, fold, replay
from smart_tuner.state.model import RECENT_DECISIONS, Incident, StopInfo, TunerState
from smart_tuner.state.reducers import InvalidTransition, UnknownEvent, apply
from smart_tuner.state.serde import from_plain, to_plain
from tests.unit.strategies import committed, envelope


def run_started(run_id: str = "run-1") -> m.RunStarted:
    return m.RunStarted(
        run_id=run_id,
        config_hash="cfg-abc",
        config={"budget": {"steps": 3000}, "lr": (1e-4, 1e-2)},
        strategy="forks",
        seed=7,
        host="gpu-box",
        pid=4242,
        version="0.1.0",
    )


def scheduled(segment_id: str, trial_id: str | None = None, start_step: int = 0) -> m.SegmentScheduled:
    return m.SegmentScheduled(
        segment_id=segment_id,
        trial_id=trial_id,
        from_checkpoint=None,
        from_sha256=None,
        start_step=start_step,
        steps=1000,
        hparams={"lr": 1e-3},
        reason=f"explore {segment_id}",
        evidence={"sampler": "tpe"},
    )


def started(segment_id: str) -> m.SegmentStarted:
    return m.SegmentStarted(segment_id=segment_id, worker_id="w1", device="cuda:0", pid=99)


def finished(segment_id: str, end_step: int = 1000) -> m.SegmentFinished:
    return m.SegmentFinished(
        segment_id=segment_id,
        end_step=end_step,
        metrics={"val_loss": 0.42},
        checkpoint=f"ckpt/{segment_id}.pt",
        checkpoint_sha256="ab" * 32,
        duration_s=61.5,
    )


def metrics(step: int, **values: float) -> m.MetricsObserved:
    return m.MetricsObserved(segment_id="s1", source="worker", step=step, metrics=values)


def promoted(segment_id: str, trial_id: str | None, objective: float, *, kept: bool = False) -> m.ChampionPromoted:
    return m.ChampionPromoted(
        segment_id=segment_id,
        trial_id=trial_id,
        checkpoint=f"ckpt/{segment_id}.pt",
        checkpoint_sha256="ab" * 32,
        objective=objective,
        previous_objective=None,
        step=1000,
        hparams={"lr": 1e-3},
        kept=kept,
        reason="kept the champion" if kept else "best validation loss so far",
        evidence={"val_loss": objective},
    )


def guard(action: str = "rollback", reason: str = "loss was NaN") -> m.GuardTripped:
    return m.GuardTripped(guard="nan", segment_id="s1", step=1000, action=action, reason=reason, evidence={})


def state_after(*items: Message) -> TunerState:
    return fold((e.seq, e.ts, e.data) for e in committed(items))


def apply_next(state: TunerState, message: Message) -> TunerState:
    return apply(state, envelope(state.last_seq + 1, message))


# --- completeness -----------------------------------------------------------------------------------


def test_every_registered_event_type_has_a_reducer() -> None:
    assert reducers.missing_reducers() == []
    events = [s.cls.TYPE for s in all_specs() if s.kind == "event"]
    assert "MetricsObserved" in events and len(events) >= 20  # the check above looked at the real registry


def test_an_event_type_without_a_reducer_raises() -> None:
    # Commands are registered messages without reducers: they never reach the log.
    start = state_after(run_started())
    heartbeat = m.Heartbeat(worker_id="w1", step=5)
    with pytest.raises(UnknownEvent, match="no reducer for event type 'Heartbeat'"):
        apply_next(start, heartbeat)
    with pytest.raises(UnknownEvent):
        fold([(2, 2.0, heartbeat)], start)


# --- refused transitions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "event", "match"),
    [
        ([run_started()], finished("never"), "segment 'never' was never scheduled"),
        ([run_started()], started("never"), "segment 'never' was never scheduled"),
        ([run_started()], run_started("run-2"), "run run-1 has already started"),
        ([], scheduled("s1"), "SegmentScheduled before RunStarted"),
        ([], m.StopRequested(source="cli", reason="x"), "StopRequested before RunStarted"),
        ([], m.RunResumed(run_id="r", head_seq=0, pid=1, host="h"), "RunResumed before RunStarted"),
        ([run_started(), scheduled("s1")], scheduled("s1"), "segment 's1' is already scheduled"),
        ([run_started()], scheduled("s1", trial_id="t9"), "names unknown trial 't9'"),
        ([run_started(), scheduled("s1"), finished("s1")], finished("s1"), "segment 's1' has already finished"),
        ([run_started(), scheduled("s1"), finished("s1")], started("s1"), "has already finished"),
        ([run_started(), scheduled("s1")], promoted("s1", None, 0.5, kept=True), "cannot keep a champion"),
        ([run_started()], promoted("nope", None, 0.5), "segment 'nope' was never scheduled"),
        (
            [run_started()],
            m.TrialPruned(trial_id="t0", step=1, value=None, reason="r", evidence={}),
            "trial 't0' was never proposed",
        ),
        ([run_started()], m.WorkerLost(worker_id="w9", reason="gone", last_heartbeat_s=3.0), "never said hello"),
        (
            [run_started(), m.StopDecided(rule="budget", reason="done", evidence={})],
            m.StopDecided(rule="budget", reason="again", evidence={}),
            "StopDecided while the run is stopping",
        ),
        (
            [run_started(), m.RunFinished(status="completed", reason="done")],
            m.RunFinished(status="completed", reason="again"),
            "the run has already finished",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_transitions_are_refused(history: list[Message], event: Message, match: str) -> None:
    state = state_after(*history)
    before = to_plain(state)
    with pytest.raises(InvalidTransition, match=match):
        apply_next(state, event)
    with pytest.raises(InvalidTransition, match=match):
        fold([(state.last_seq + 1, 5.0, event)], state)
    assert to_plain(state) == before


def test_trial_proposed_twice_is_refused() -> None:
    trial = m.TrialProposed(trial_id="t0", number=0, hparams={}, sampler="tpe", reason="r", evidence={})
    with pytest.raises(InvalidTransition, match="trial 't0' was already proposed"):
        state_after(run_started(), trial, trial)


@pytest.mark.parametrize("seq", [0, 1, 3, 100])
def test_seq_must_follow_the_state(seq: int) -> None:
    state = state_after(run_started())  # last_seq 1
    event = envelope(seq, m.StopRequested(source="cli", reason="x"))
    with pytest.raises(InvalidTransition, match=f"event seq {seq} does not follow the state's last seq 1"):
        apply(state, event)
    with pytest.raises(InvalidTransition, match=f"event seq {seq} does not follow"):
        replay([event], state)


def test_a_gap_inside_a_metrics_run_is_refused_by_fold() -> None:
    events = committed([run_started(), metrics(1, loss=1.0), metrics(2, loss=0.9)])
    items = [(e.seq, e.ts, e.data) for e in events]
    items[2] = (4, items[2][1], items[2][2])
    with pytest.raises(InvalidTransition, match="event seq 4 does not follow the state's last seq 2"):
        fold(items)


def test_a_folder_keeps_what_it_folded_before_a_refused_event() -> None:
    """The sequencer folds a group one event at a time and refuses the bad ones: what a refused
    event leaves behind must be the state of the events before it, and the next event follows it."""
    events = committed([run_started(), metrics(1, loss=1.0), metrics(2, loss=0.9)])
    folder = Folder(TunerState())
    folder.add_all((e.seq, e.ts, e.data) for e in events)
    refused = m.SegmentStarted(segment_id="never-scheduled", worker_id="w", device="cpu", pid=1)
    with pytest.raises(InvalidTransition, match="never scheduled"):
        folder.add(4, 4.0, refused)
    with pytest.raises(InvalidTransition, match="event seq 6 does not follow the state's last seq 4"):
        folder.add_all([(4, 4.0, metrics(3, loss=0.8)), (6, 6.0, metrics(4, loss=0.7))])
    folder.add(5, 5.0, metrics(5, loss=0.6))
    state = folder.result()
    assert (state.last_seq, state.progress.global_step, state.progress.metrics_observed) == (5, 5, 4)
    assert state.progress.last_metrics == {"loss": 0.6}


# --- purity -----------------------------------------------------------------------------------------


def lifecycle() -> list[Message]:
    trial = m.TrialProposed(
        trial_id="t1",
        number=0,
        hparams={"lr": 1e-3},
        sampler="tpe",
        reason="first TPE candidate",
        evidence={"n_trials": 0},
    )
    return [
        run_started(),
        trial,
        scheduled("s1", trial_id="t1"),
        started("s1"),
        metrics(100, loss=2.0, grad_norm=5.0),
        metrics(300, loss=1.5),
        metrics(200, loss=1.7, align=0.3),  # late report for an earlier step: global_step stays 300
        m.HparamsApplied(segment_id="s1", step=300, hparams={"lr": 5e-4}, classes={"lr": "hot"}, apply_s=0.01),
        finished("s1", end_step=1000),
        promoted("s1", "t1", 0.42),
        guard(),
        m.StopDecided(rule="budget", reason="step budget spent", evidence={"steps": 1000, "budget": 1000}),
        m.RunFinished(status="completed", reason="budget", summary={"best": 0.42}),
    ]


def test_apply_does_not_mutate_its_input() -> None:
    state = TunerState()
    for env in committed(lifecycle()):
        before = to_plain(state)
        after = apply(state, env)
        assert to_plain(state) == before, env.type
        assert after is not state
        state = after


def test_fold_does_not_mutate_a_start_state() -> None:
    events = committed(lifecycle())
    start = fold((e.seq, e.ts, e.data) for e in events[:4])
    before = to_plain(start)
    fold(((e.seq, e.ts, e.data) for e in events[4:]), start)
    assert to_plain(start) == before


# --- a realistic run --------------------------------------------------------------------------------


def test_a_realistic_lifecycle() -> None:
    events = committed(lifecycle())
    s = replay(events)
    assert to_plain(s) == to_plain(fold((e.seq, e.ts, e.data) for e in events))

    assert (s.last_seq, s.last_ts) == (13, 1013.0)
    assert s.run is not None
    assert (s.run.run_id, s.run.config_hash, s.run.seed, s.run.started_ts) == ("run-1", "cfg-abc", 7, 1001.0)
    assert s.run.config == {"budget": {"steps": 3000}, "lr": (1e-4, 1e-2)}

    seg = s.tuning.segments["s1"]
    assert (seg.status, seg.trial_id, seg.scheduled_seq, seg.worker_id, seg.attempts) == ("finished", "t1", 3, "w1", 1)
    assert (seg.end_step, seg.last_step, seg.checkpoint, seg.duration_s) == (1000, 1000, "ckpt/s1.pt", 61.5)
    assert seg.metrics == {"val_loss": 0.42}
    assert seg.applied == {"lr": 5e-4}

    trial = s.tuning.trials["t1"]
    assert (trial.status, trial.value, trial.proposed_seq) == ("evaluated", 0.42, 2)

    champ = s.tuning.champion
    assert champ is not None
    assert (champ.segment_id, champ.trial_id, champ.objective, champ.promoted_seq) == ("s1", "t1", 0.42, 10)
    assert s.tuning.promotions == 1

    assert s.progress.global_step == 1000  # SegmentFinished moved it past the last metric
    assert s.progress.metrics_observed == 3
    assert s.progress.last_metrics == {"loss": 1.7, "grad_norm": 5.0, "align": 0.3}

    assert s.health.guards == (Incident(seq=11, kind="nan", subject="s1", detail="rollback: loss was NaN"),)
    c = s.control
    assert c.stop == StopInfo(
        seq=12, rule="budget", reason="step budget spent", evidence={"steps": 1000, "budget": 1000}
    )
    assert (c.phase, c.status, c.finish_reason, c.finished_ts) == ("finished", "completed", "budget", 1013.0)
    assert c.summary == {"best": 0.42}

    assert [(d.seq, d.type, d.reason) for d in s.recent_decisions] == [
        (2, "TrialProposed", "first TPE candidate"),
        (3, "SegmentScheduled", "explore s1"),
        (10, "ChampionPromoted", "best validation loss so far"),
        (11, "GuardTripped", "loss was NaN"),
        (12, "StopDecided", "step budget spent"),
    ]
    assert [d.ts for d in s.recent_decisions] == [1002.0, 1003.0, 1010.0, 1011.0, 1012.0]


def test_phases_through_stop_finish_and_resume() -> None:
    s = state_after(run_started())
    assert s.control.phase == "running"
    s = apply_next(s, m.StopRequested(source="sigint", reason="operator pressed Ctrl-C"))
    assert s.control.phase == "running"
    assert [(r.seq, r.source) for r in s.control.stop_requests] == [(2, "sigint")]
    s = apply_next(s, m.StopDecided(rule="operator", reason="asked to stop", evidence={}))
    assert s.control.phase == "stopping"
    s = apply_next(s, m.RunFinished(status="stopped", reason="operator"))
    assert (s.control.phase, s.control.status) == ("finished", "stopped")
    s = apply_next(s, m.ActorReady(actor="sequencer"))
    s = apply_next(s, m.RunResumed(run_id="run-1", head_seq=5, pid=5151, host="gpu-box"))
    c = s.control
    assert (c.phase, c.status, c.finish_reason, c.finished_ts, c.stop, c.resumes) == (
        "running",
        None,
        None,
        None,
        None,
        1,
    )
    assert c.stop_requests == () and c.ready_actors == ()
    s = apply_next(s, m.ActorReady(actor="tuner"))
    s = apply_next(s, m.ActorReady(actor="guard"))
    s = apply_next(s, m.ActorReady(actor="tuner"))
    assert s.control.ready_actors == ("guard", "tuner")


def test_segment_failure_and_retry() -> None:
    s = state_after(run_started(), scheduled("s1"), started("s1"))
    s = apply_next(s, m.SegmentFailed(segment_id="s1", reason="oom", detail="CUDA out of memory", step=420))
    seg = s.tuning.segments["s1"]
    assert (seg.status, seg.failure, seg.failure_detail, seg.last_step) == ("failed", "oom", "CUDA out of memory", 420)
    s = apply_next(s, started("s1"))
    assert (s.tuning.segments["s1"].status, s.tuning.segments["s1"].attempts) == ("running", 2)
    s = apply_next(s, finished("s1"))
    seg = s.tuning.segments["s1"]
    assert (seg.status, seg.failure, seg.failure_detail) == ("finished", None, None)


def test_champion_kept_and_replaced() -> None:
    s = state_after(run_started(), scheduled("s1"), scheduled("s2"), promoted("s1", None, 0.5))
    s = apply_next(s, promoted("s2", None, 0.45, kept=True))
    champ = s.tuning.champion
    assert champ is not None  # kept: same hyperparameters, the lineage moved on to s2's checkpoint
    assert (champ.segment_id, champ.objective, champ.kept_count, s.tuning.promotions) == ("s2", 0.45, 1, 1)
    assert champ.promoted_seq == s.tuning.champion.promoted_seq
    s = apply_next(s, promoted("s2", None, 0.3))
    champ = s.tuning.champion
    assert champ is not None
    assert (champ.segment_id, champ.objective, champ.kept_count, s.tuning.promotions) == ("s2", 0.3, 0, 2)


def test_trials_pruned_and_scheduled() -> None:
    trial = m.TrialProposed(trial_id="t0", number=0, hparams={"lr": 0.1}, sampler="tpe", reason="r", evidence={})
    s = state_after(run_started(), trial)
    assert s.tuning.trials["t0"].status == "proposed"
    s = apply_next(s, scheduled("s1", trial_id="t0"))
    assert s.tuning.trials["t0"].status == "running"
    s = apply_next(s, m.TrialPruned(trial_id="t0", step=500, value=3.5, reason="worse than median", evidence={}))
    t = s.tuning.trials["t0"]
    assert (t.status, t.value, t.pruned_step) == ("pruned", 3.5, 500)
    s = apply_next(s, scheduled("s2", trial_id="t0"))  # a pruned trial stays pruned
    assert s.tuning.trials["t0"].status == "pruned"


def test_health_workers_and_counters() -> None:
    s = state_after(
        run_started(),
        m.WorkerHello(worker_id="w1", pid=11, device="cuda:0", hparams={"lr": {"type": "float"}}, metrics=("loss",)),
        m.AlertSent(channel="slack", severity="warning", title="t", dedup_key="k", ok=True),
        m.AlertSent(channel="slack", severity="error", title="t", dedup_key="k", ok=False, error="HTTP 500"),
        m.AlertSent(channel="email", severity="info", title="t", dedup_key="k2", ok=True),
        m.ProtocolViolation(where="bus", error="bad bytes", count=3),
        m.ProtocolViolation(where="bus", error="bad bytes", count=2),
        m.ActorCrashed(actor="tuner", error="ValueError: x", restarts=2, gave_up=True),
        m.RollbackPerformed(
            to_checkpoint="ckpt/a.pt", to_sha256="cd", to_step=800, hparams={}, reason="NaN loss", evidence={}
        ),
        m.WorkerLost(worker_id="w1", reason="heartbeat timeout", last_heartbeat_s=31.0),
    )
    h = s.health
    assert (h.alerts_sent, h.alerts_failed, h.protocol_violations) == (2, 1, 5)
    assert h.crashes == (Incident(seq=8, kind="crash", subject="tuner", detail="ValueError: x (restart 2, gave up)"),)
    assert h.rollbacks == (Incident(seq=9, kind="rollback", subject="ckpt/a.pt", detail="to step 800: NaN loss"),)
    w = s.tuning.workers["w1"]
    assert (w.status, w.lost_reason, w.metrics, w.device) == ("lost", "heartbeat timeout", ("loss",), "cuda:0")


def test_recent_decisions_keep_the_newest() -> None:
    n = RECENT_DECISIONS + 7
    s = state_after(run_started(), *[guard(reason=f"trip {i}") for i in range(n)])
    assert len(s.health.guards) == n  # the health section keeps every trip
    assert len(s.recent_decisions) == RECENT_DECISIONS
    assert [d.reason for d in s.recent_decisions] == [f"trip {i}" for i in range(7, n)]
    assert s.recent_decisions[-1].seq == n + 1


def test_non_decision_events_do_not_land_in_recent_decisions() -> None:
    s = state_after(run_started(), scheduled("s1"), started("s1"), metrics(10, loss=1.0), finished("s1"))
    assert [d.type for d in s.recent_decisions] == ["SegmentScheduled"]


def _decision_types() -> list[str]:
    return sorted(s.cls.TYPE for s in all_specs() if s.kind == "event" and s.decision)


def test_every_decision_event_lands_in_recent_decisions() -> None:
    history: list[Message] = [
        run_started(),
        m.TrialProposed(trial_id="t0", number=0, hparams={}, sampler="tpe", reason="why TrialProposed", evidence={}),
        m.RoundPlanned(
            round=0,
            trials=("t0",),
            from_checkpoint=None,
            from_sha256=None,
            start_step=0,
            rung_steps=(1,),
            keep=(1,),
            reason="why RoundPlanned",
            evidence={},
        ),
        scheduled("s1", "t0"),
        m.TrialPruned(trial_id="t0", step=1, value=None, reason="why TrialPruned", evidence={}),
        promoted("s1", None, 1.0),
        guard(reason="why GuardTripped"),
        m.RollbackPerformed(
            to_checkpoint="c", to_sha256="x", to_step=1, hparams={}, reason="why RollbackPerformed", evidence={}
        ),
        m.StopDecided(rule="r", reason="why StopDecided", evidence={}),
    ]
    s = state_after(*history)
    assert sorted({d.type for d in s.recent_decisions}) == _decision_types()
    for d in s.recent_decisions:
        original: Any = history[d.seq - 1]
        assert (d.type, d.reason) == (original.TYPE, original.reason)


def test_envelope_seq_and_ts_are_stamped() -> None:
    env = Envelope(
        seq=1, id="x", ts=123.25, type="RunStarted", tv=1, actor="a", corr=None, cause=None, data=run_started()
    )
    s = apply(TunerState(), env)
    assert (s.last_seq, s.last_ts) == (1, 123.25)
    assert fold([]) == TunerState()


def _proposed(tid: str, number: int) -> m.TrialProposed:
    return m.TrialProposed(
        trial_id=tid, number=number, hparams={"learning_rate": 1e-3}, sampler="tpe", reason="test", evidence={}
    )


def _round(n: int, *trials: str) -> m.RoundPlanned:
    return m.RoundPlanned(
        round=n,
        trials=trials,
        from_checkpoint=None,
        from_sha256=None,
        start_step=0,
        rung_steps=(10,),
        keep=(1,),
        reason="test",
        evidence={},
    )


def test_a_round_is_decided_by_its_winner_and_only_then_is_the_next_one_planned() -> None:
    s = state_after(run_started(), _proposed("t0", 0), _proposed("t1", 1), _round(0, "t0", "t1"))
    assert s.tuning.rounds[0].winner is None
    with pytest.raises(InvalidTransition, match="undecided"):
        apply_next(s, _round(1, "t0"))
    s = apply_next(s, scheduled("s1"))
    s = apply_next(
        s,
        m.ChampionPromoted(
            segment_id="s1",
            trial_id="t1",
            checkpoint="c",
            checkpoint_sha256="x",
            objective=0.4,
            previous_objective=None,
            step=10,
            hparams={},
            kept=False,
            reason="test",
            evidence={},
        ),
    )
    assert s.tuning.rounds[0].winner == "t1" and s.tuning.trials["t1"].status == "evaluated"
    with pytest.raises(InvalidTransition, match="next round is 1"):
        apply_next(s, _round(3, "t0"))
    with pytest.raises(InvalidTransition, match="unknown trials"):
        apply_next(s, _round(1, "t9"))
    assert apply_next(s, _round(1, "t0")).tuning.rounds[1].planned_seq == s.last_seq + 1


def test_guard_adjustments_accumulate() -> None:
    def trip(**hp: object) -> m.GuardTripped:
        return m.GuardTripped(guard="g", segment_id=None, step=None, action="a", reason="r", evidence={}, hparams=hp)

    s = state_after(run_started(), trip(guided_attn_weight=2.0), trip(batch_size=8), trip(guided_attn_weight=4.0))
    assert s.tuning.adjustments == {"guided_attn_weight": 4.0, "batch_size": 8}


def test_the_cadence_is_recorded_with_the_segment_and_written_only_when_set() -> None:
    """A log from before the cadence was recorded projects to the same document as it did then."""
    old = state_after(run_started(), scheduled("s1"))
    new = state_after(run_started(), replace(scheduled("s1"), report_every=10, eval_every=0))
    old_plain = to_plain(old)["tuning"]["segments"]["s1"]
    new_plain = to_plain(new)["tuning"]["segments"]["s1"]
    assert "report_every" not in old_plain and "eval_every" not in old_plain
    assert (new_plain["report_every"], new_plain["eval_every"]) == (10, 0)
    assert {k: v for k, v in new_plain.items() if k not in ("report_every", "eval_every")} == old_plain
    assert from_plain(TunerState, to_plain(new)) == new and from_plain(TunerState, to_plain(old)) == old


def test_the_time_between_a_crash_and_its_resume_is_not_running_time() -> None:
    s = apply(TunerState(), envelope(1, run_started(), ts=1000.0))
    s = apply(s, envelope(2, m.ActorReady(actor="tuner"), ts=1100.0))
    s = apply(s, envelope(3, m.RunResumed(run_id="run-1", head_seq=2, pid=2, host="h"), ts=5100.0))  # 4000 s dead
    s = apply(s, envelope(4, m.RunResumed(run_id="run-1", head_seq=3, pid=3, host="h"), ts=5150.0))
    assert s.run is not None and s.run.paused_s == 4050.0
    config = {"budget": {"max_hours": 1.0}}
    s = replace(s, run=replace(s.run, config=config))
    stopper = Stopper(available_strategies=frozenset({"forks"}))
    assert stopper._budget(s, config, now_ts=1000.0 + 4050.0 + 3500.0) is None  # 3500 s of running
    decided = stopper._budget(s, config, now_ts=1000.0 + 4050.0 + 3700.0)
    assert decided is not None and decided.rule == "budget_hours"


def test_gpu_hours_count_the_segments_that_failed_too() -> None:
    """A segment that failed (NaN, OOM, a lost worker) held its GPUs as long as it ran: from its
    start to its failure, by the committed clock, on every attempt."""
    config = {"budget": {"max_gpu_hours": 1.0}}
    stopper = Stopper(available_strategies=frozenset({"forks"}))
    events = [
        (run_started(), 0.0),
        (scheduled("s1"), 10.0),
        (m.SegmentStarted(segment_id="s1", worker_id="w1", device="cuda:0 x2", pid=1), 100.0),
        (m.SegmentFailed(segment_id="s1", reason="oom", detail="out of memory", step=7), 100.0 + 0.2 * 3600),
        (m.SegmentStarted(segment_id="s1", worker_id="w1", device="cuda:0", pid=1), 1000.0),
        (
            m.SegmentFinished(
                segment_id="s1",
                end_step=1000,
                metrics={},
                checkpoint="c",
                checkpoint_sha256="ab",
                duration_s=0.5 * 3600,
            ),
            1000.0 + 0.5 * 3600,
        ),
    ]
    s = TunerState()
    for seq, (msg, ts) in enumerate(events, start=1):
        env = envelope(seq, msg, ts=ts)
        s = apply(s, env)
        stopper.observe(env)
    s = replace(s, run=replace(s.run, config=config)) if s.run else s
    assert stopper.failed_gpu_s == pytest.approx(2 * 0.2 * 3600)  # two GPUs for 0.2 h
    assert stopper._budget(s, config, now_ts=5000.0) is None  # 0.4 + 0.5 = 0.9 GPU hours
    more = {"budget": {"max_gpu_hours": 0.85}}
    decided = stopper._budget(s, more, now_ts=5000.0)
    assert decided is not None and decided.rule == "budget_gpu_hours"
    assert decided.evidence["gpu_hours"] == pytest.approx(0.9)  # without the failed attempt: 0.5
