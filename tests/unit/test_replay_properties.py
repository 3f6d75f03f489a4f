"""Replay properties over random valid histories: fold == apply one by one, deterministic
renders, snapshot + rest == everything, and the same through a real file journal.

``histories(data)`` draws a run that starts with ``RunStarted`` and then only
makes transitions that are valid for the state so far (tracked by a small model
of its own, so that a reducer refusing a valid transition fails the test).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smart_tuner.protocol import Message, decode, encode
from smart_tuner.protocol import messages as m
from smart_tuner.state import history
from smart_tuner.state.fold import fold, replay
from smart_tuner.state.journal import FileJournal
from smart_tuner.state.model import TunerState
from smart_tuner.state.projection import render
from smart_tuner.state.reducers import apply
from smart_tuner.state.serde import from_plain, to_plain
from smart_tuner.state.snapshot import latest_snapshot, read_snapshot, write_snapshot
from tests.unit.strategies import envelope, json_values, keys, texts

Item = tuple[int, float, Message]

small_json = st.dictionaries(keys, json_values, max_size=3)
metric_values = st.dictionaries(st.sampled_from(["loss", "val_loss", "grad_norm", "align", "lr"]), st.floats())
steps = st.integers(0, 10**7)
finite = st.floats(allow_nan=False, allow_infinity=False)


@dataclass
class Shadow:
    """What the generator knows about the run so far (independent of the reducers)."""

    phase: str = "running"
    segments: dict[str, str] = field(default_factory=dict)  # id -> scheduled/running/finished/failed
    trials: list[str] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    champion: bool = False
    made: int = 0  # ids made so far

    def new_id(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}-{self.made}"

    def open_segments(self) -> list[str]:
        return [s for s, status in self.segments.items() if status != "finished"]


def _segment_scheduled(d: st.DataObject, sh: Shadow) -> Message:
    seg = sh.new_id("seg")
    sh.segments[seg] = "scheduled"
    return m.SegmentScheduled(
        segment_id=seg,
        trial_id=d.draw(st.none() | st.sampled_from(sh.trials)) if sh.trials else None,
        from_checkpoint=d.draw(st.none() | texts),
        from_sha256=None,
        start_step=d.draw(steps),
        steps=d.draw(st.integers(1, 5000)),
        hparams=d.draw(small_json),
        reason=d.draw(texts),
        evidence=d.draw(small_json),
    )


def _segment_started(d: st.DataObject, sh: Shadow) -> Message:
    seg = d.draw(st.sampled_from(sh.open_segments()))
    sh.segments[seg] = "running"
    return m.SegmentStarted(segment_id=seg, worker_id=d.draw(texts), device="cuda:0", pid=d.draw(st.integers(1, 9999)))


def _hparams_applied(d: st.DataObject, sh: Shadow) -> Message:
    seg = d.draw(st.sampled_from(sh.open_segments()))
    return m.HparamsApplied(
        segment_id=seg, step=d.draw(steps), hparams=d.draw(small_json), classes={"lr": "hot"}, apply_s=0.5
    )


def _segment_finished(d: st.DataObject, sh: Shadow) -> Message:
    seg = d.draw(st.sampled_from(sh.open_segments()))
    sh.segments[seg] = "finished"
    return m.SegmentFinished(
        segment_id=seg,
        end_step=d.draw(steps),
        metrics=d.draw(metric_values),
        checkpoint=f"ckpt/{seg}.pt",
        checkpoint_sha256="00" * 32,
        duration_s=d.draw(finite),
    )


def _segment_failed(d: st.DataObject, sh: Shadow) -> Message:
    seg = d.draw(st.sampled_from(sh.open_segments()))
    sh.segments[seg] = "failed"
    return m.SegmentFailed(
        segment_id=seg,
        reason=d.draw(st.sampled_from(["nan", "oom", "error", "aborted", "lost", "timeout"])),
        detail=d.draw(texts),
        step=d.draw(st.none() | steps),
    )


def _metrics(d: st.DataObject, sh: Shadow) -> Message:
    seg = d.draw(st.none() | st.sampled_from(sorted(sh.segments))) if sh.segments else None
    return m.MetricsObserved(segment_id=seg, source="worker", step=d.draw(steps), metrics=d.draw(metric_values))


def _trial_proposed(d: st.DataObject, sh: Shadow) -> Message:
    trial = sh.new_id("trial")
    sh.trials.append(trial)
    return m.TrialProposed(
        trial_id=trial,
        number=len(sh.trials),
        hparams=d.draw(small_json),
        sampler="tpe",
        reason=d.draw(texts),
        evidence=d.draw(small_json),
    )


def _trial_pruned(d: st.DataObject, sh: Shadow) -> Message:
    return m.TrialPruned(
        trial_id=d.draw(st.sampled_from(sh.trials)),
        step=d.draw(steps),
        value=d.draw(st.none() | st.floats()),
        reason=d.draw(texts),
        evidence={},
    )


def _champion_promoted(d: st.DataObject, sh: Shadow) -> Message:
    kept = sh.champion and d.draw(st.booleans())
    sh.champion = True
    return m.ChampionPromoted(
        segment_id=d.draw(st.sampled_from(sorted(sh.segments))),
        trial_id=d.draw(st.none() | st.sampled_from(sh.trials)) if sh.trials else None,
        checkpoint="ckpt/x.pt",
        checkpoint_sha256="11" * 32,
        objective=d.draw(st.floats()),
        previous_objective=d.draw(st.none() | finite),
        step=d.draw(steps),
        hparams=d.draw(small_json),
        kept=kept,
        reason=d.draw(texts),
        evidence=d.draw(small_json),
    )


def _guard_tripped(d: st.DataObject, sh: Shadow) -> Message:
    return m.GuardTripped(
        guard=d.draw(st.sampled_from(["nan", "divergence", "plateau"])),
        segment_id=d.draw(st.none() | st.sampled_from(sorted(sh.segments))) if sh.segments else None,
        step=d.draw(st.none() | steps),
        action=d.draw(st.sampled_from(["rollback", "alert", "stop"])),
        reason=d.draw(texts),
        evidence=d.draw(small_json),
    )


def _rollback(d: st.DataObject, sh: Shadow) -> Message:
    return m.RollbackPerformed(
        to_checkpoint=d.draw(texts),
        to_sha256="22" * 32,
        to_step=d.draw(steps),
        hparams=d.draw(small_json),
        reason=d.draw(texts),
        evidence={},
    )


def _alert(d: st.DataObject, sh: Shadow) -> Message:
    ok = d.draw(st.booleans())
    return m.AlertSent(
        channel="slack",
        severity=d.draw(st.sampled_from(["info", "warning", "error", "critical"])),
        title=d.draw(texts),
        dedup_key=d.draw(texts),
        ok=ok,
        error=None if ok else "HTTP 500",
    )


def _stop_requested(d: st.DataObject, sh: Shadow) -> Message:
    return m.StopRequested(source=d.draw(st.sampled_from(["cli", "sigint", "dashboard"])), reason=d.draw(texts))


def _stop_decided(d: st.DataObject, sh: Shadow) -> Message:
    sh.phase = "stopping"
    return m.StopDecided(rule=d.draw(texts), reason=d.draw(texts), evidence=d.draw(small_json))


def _run_finished(d: st.DataObject, sh: Shadow) -> Message:
    sh.phase = "finished"
    status = d.draw(st.sampled_from(["completed", "stopped", "failed"]))
    return m.RunFinished(status=status, reason=d.draw(texts), summary=d.draw(small_json))


def _run_resumed(d: st.DataObject, sh: Shadow) -> Message:
    sh.phase = "running"
    return m.RunResumed(run_id="run-1", head_seq=d.draw(steps), pid=7, host="h", truncated_bytes=d.draw(steps))


def _worker_hello(d: st.DataObject, sh: Shadow) -> Message:
    worker = d.draw(st.sampled_from(sh.workers)) if sh.workers and d.draw(st.booleans()) else sh.new_id("worker")
    if worker not in sh.workers:
        sh.workers.append(worker)
    return m.WorkerHello(
        worker_id=worker, pid=1, device="cuda:0", hparams=d.draw(small_json), metrics=("loss", "val_loss")
    )


def _worker_lost(d: st.DataObject, sh: Shadow) -> Message:
    return m.WorkerLost(worker_id=d.draw(st.sampled_from(sh.workers)), reason=d.draw(texts), last_heartbeat_s=30.0)


def _misc(d: st.DataObject, sh: Shadow) -> Message:
    return d.draw(
        st.sampled_from(
            [
                m.ActorReady(actor="tuner"),
                m.ActorReady(actor="guard"),
                m.ActorCrashed(actor="tuner", error="KeyError: 'x'", restarts=1, gave_up=False),
                m.ProtocolViolation(where="bus", error="truncated", count=2),
            ]
        )
    )


Builder = Callable[[st.DataObject, Shadow], Message]


def _choices(sh: Shadow) -> list[Builder]:
    """The transitions that are valid now; metrics come first and thrice, to get runs of them."""
    out: list[Builder] = [_metrics, _metrics, _metrics, _segment_scheduled, _trial_proposed, _guard_tripped]
    out += [_rollback, _alert, _stop_requested, _run_resumed, _worker_hello, _misc]
    if sh.open_segments():
        out += [_segment_started, _hparams_applied, _segment_finished, _segment_failed]
    if sh.trials:
        out.append(_trial_pruned)
    if sh.segments:
        out.append(_champion_promoted)
    if sh.workers:
        out.append(_worker_lost)
    if sh.phase == "running":
        out.append(_stop_decided)
    if sh.phase != "finished":
        out.append(_run_finished)
    return out


def histories(d: st.DataObject, max_events: int = 60) -> list[Item]:
    """A valid ``(seq, ts, message)`` history drawn step by step, starting with RunStarted."""
    sh = Shadow()
    start = m.RunStarted(
        run_id="run-1",
        config_hash="h",
        config=d.draw(small_json),
        strategy="forks",
        seed=d.draw(st.integers(0, 99)),
        host="h",
        pid=1,
        version="0.1.0",
    )
    out: list[Item] = [(1, 1000.0, start)]
    ts = 1000.0
    for _ in range(d.draw(st.integers(0, max_events), label="length")):
        builder = d.draw(st.sampled_from(_choices(sh)), label="transition")
        ts += d.draw(st.sampled_from([0.0, 0.25, 1.0, 3600.5]))
        out.append((len(out) + 1, ts, builder(d, sh)))
    return out


def fold_apply(items: list[Item], state: TunerState | None = None) -> TunerState:
    state = TunerState() if state is None else state
    for seq, ts, message in items:
        before = to_plain(state)
        nxt = apply(state, envelope(seq, message, ts=ts))
        assert to_plain(state) == before, f"apply mutated its input at seq {seq}"
        state = nxt
    return state


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(d=st.data())
def test_fold_equals_applying_one_by_one(d: st.DataObject) -> None:
    items = histories(d)
    folded = fold(items)
    assert to_plain(folded) == to_plain(fold_apply(items))
    assert folded.last_seq == len(items)
    assert folded.last_ts == items[-1][1]


@PROPERTY
@given(d=st.data())
def test_replay_is_deterministic(d: st.DataObject) -> None:
    items = histories(d)
    k = d.draw(st.integers(0, len(items)), label="k")
    first = render(fold(items))
    assert render(fold(items)) == first
    assert render(replay(envelope(seq, msg, ts=ts) for seq, ts, msg in items)) == first
    assert render(fold(items[k:], fold(items[:k]))) == first  # a fold can stop and go on anywhere


@PROPERTY
@given(d=st.data())
def test_snapshot_plus_rest_equals_everything(d: st.DataObject) -> None:
    items = histories(d)
    k = d.draw(st.integers(0, len(items)), label="k")
    head = fold(items[:k])
    assert from_plain(TunerState, to_plain(head)) == head
    with tempfile.TemporaryDirectory() as tmp:
        path = write_snapshot(Path(tmp), head)
        assert path.name == f"snapshot-{k:012d}.msgpack"
        back = read_snapshot(path)
        assert back is not None
        assert render(back) == render(head)
        assert render(fold(items[k:], back)) == render(fold(items))
        latest = latest_snapshot(Path(tmp))
        assert latest is not None and render(latest) == render(head)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.data())
def test_a_file_journal_replays_to_the_same_state(d: st.DataObject) -> None:
    items = histories(d)
    payloads = [encode(envelope(seq, msg, ts=ts)) for seq, ts, msg in items]
    k = d.draw(st.integers(0, len(items)), label="until")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.log"
        with FileJournal.open(path, fsync=False) as journal:
            done = 0
            while done < len(payloads):
                size = d.draw(st.integers(1, 8), label="group")
                journal.append(payloads[done : done + size])
                done = journal.last_seq
        with FileJournal.open(path) as journal:
            assert journal.recovery.truncated_bytes == 0
            assert [e.seq for e in history.events(journal)] == list(range(1, len(items) + 1))
            everything = render(fold(items))
            assert render(history.load(journal)) == everything
            assert render(history.load(journal, until=k)) == render(fold(items[:k]))
            # Decoded with every check gives the same history as the fast path.
            checked = [(e.seq, e.ts, e.data) for e in (decode(p) for _, p in journal.read())]
            assert render(fold(checked)) == everything
            # With a snapshot at k: used for the head, ignored for an earlier bound.
            snaps = Path(tmp) / "snapshots"
            write_snapshot(snaps, fold(items[:k]))
            assert render(history.load(journal, snapshots=snaps)) == everything
            j = d.draw(st.integers(0, len(items)), label="bound")
            assert render(history.load(journal, until=j, snapshots=snaps)) == render(fold(items[:j]))
