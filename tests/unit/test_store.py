"""The metric store: series per segment and along the champion's lineage, folded from the log."""

from __future__ import annotations

from smart_tuner.actors.store.metric_store import MetricStore
from smart_tuner.protocol import Envelope
from smart_tuner.protocol import messages as m
from smart_tuner.state.fold import replay
from tests.unit.busharness import run_started


def envs(*messages: m.Message) -> list[Envelope]:
    return [
        Envelope(seq=i + 1, id=str(i), ts=float(i), type=x.TYPE, tv=1, actor="t", corr=None, cause=None, data=x)
        for i, x in enumerate(messages)
    ]


def scheduled(sid: str, start: str | None, step: int) -> m.SegmentScheduled:
    return m.SegmentScheduled(
        segment_id=sid,
        trial_id=None,
        from_checkpoint=start,
        from_sha256=None,
        start_step=step,
        steps=10,
        hparams={},
        reason="t",
        evidence={},
    )


def finished(sid: str, step: int, objective: float) -> m.SegmentFinished:
    return m.SegmentFinished(
        segment_id=sid,
        end_step=step,
        metrics={"val_objective": objective},
        checkpoint=f"{sid}.pt",
        checkpoint_sha256="x",
        duration_s=1.0,
    )


def metrics(sid: str, step: int, loss: float) -> m.MetricsObserved:
    return m.MetricsObserved(segment_id=sid, source="worker", step=step, metrics={"train_loss": loss})


def promoted(sid: str, step: int, objective: float) -> m.ChampionPromoted:
    return m.ChampionPromoted(
        segment_id=sid,
        trial_id=None,
        checkpoint=f"{sid}.pt",
        checkpoint_sha256="x",
        objective=objective,
        previous_objective=None,
        step=step,
        hparams={},
        kept=False,
        reason="t",
        evidence={},
    )


def test_segment_series_and_the_lineage_through_forks() -> None:
    log = envs(
        run_started(),
        scheduled("a", None, 0),
        metrics("a", 5, 2.0),
        metrics("a", 10, 1.5),
        finished("a", 10, 1.4),
        promoted("a", 10, 1.4),
        scheduled("b", "a.pt", 10),
        metrics("b", 20, 1.0),
        finished("b", 20, 0.9),  # the loser
        scheduled("c", "a.pt", 10),
        metrics("c", 20, 0.8),
        finished("c", 20, 0.7),
        promoted("c", 20, 0.7),
    )
    store = MetricStore()
    for env in log:
        store.observe(env)
    assert store.metric("a", "train_loss").values == [2.0, 1.5] and store.metric("a", "missing").values == []
    assert store.metric("b", "val_objective").best == (20, 0.9)
    state = replay(log)
    assert store.lineage_segments(state) == ["a", "c"]  # b forked from the same checkpoint and lost
    assert store.lineage("val_objective", state).values == [1.4, 0.7]
    assert store.lineage("train_loss", state).steps == [5, 10, 20]


def test_a_restart_folds_each_event_once() -> None:
    log = envs(run_started(), scheduled("a", None, 0), metrics("a", 5, 2.0), metrics("a", 5, 3.0))
    store = MetricStore()
    for env in [*log[:3], *log]:  # a restart re-reads from its start state
        store.observe(env)
    assert store.metric("a", "train_loss").values == [3.0] and store.last_seq == 4
