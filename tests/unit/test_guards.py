"""Guard rails, driven by recorded metric sequences: each pathology, its evidence and its action."""

from __future__ import annotations

from collections.abc import Sequence

from smart_tuner.actors.guards import GuardRails
from smart_tuner.protocol import Envelope
from smart_tuner.protocol import messages as m
from smart_tuner.state.model import TunerState
from smart_tuner.state.reducers import apply
from tests.unit.busharness import run_started

ANNOUNCED = {
    "learning_rate": {"default": 1e-3, "class": "hot"},
    "batch_size": {"default": 16, "class": "warm"},
    "grad_clip_thresh": {"default": 1.0, "class": "hot"},
    "guided_attn_weight": {"default": 1.0, "class": "hot"},
}


class Driver:
    """Folds events into a state and hands each to the guard rails, collecting what they propose."""

    def __init__(self) -> None:
        self.guards = GuardRails()
        self.state = TunerState()
        self.out: list[m.Message] = []

    def feed(self, *messages: m.Message) -> list[m.Message]:
        new: list[m.Message] = []
        for msg in messages:
            env = Envelope(
                seq=self.state.last_seq + 1,
                id="e",
                ts=0.0,
                type=msg.TYPE,
                tv=1,
                actor="t",
                corr=None,
                cause=None,
                data=msg,
            )
            self.state = apply(self.state, env)
            self.guards.observe(env)
            proposals = [o.message for o in self.guards.react(env, self.state)]
            for p in proposals:  # committed, as the sequencer would
                committed = Envelope(
                    seq=self.state.last_seq + 1,
                    id="p",
                    ts=0.0,
                    type=p.TYPE,
                    tv=1,
                    actor="guards",
                    corr=None,
                    cause=None,
                    data=p,
                )
                self.state = apply(self.state, committed)
            new += proposals
        self.out += new
        return new


def started(sid: str = "s1", start_step: int = 0, **hp: object) -> Sequence[m.Message]:
    return [
        m.SegmentScheduled(
            segment_id=sid,
            trial_id=None,
            from_checkpoint="c0.pt",
            from_sha256="ab",
            start_step=start_step,
            steps=100,
            hparams=hp,
            reason="t",
            evidence={},
        ),
        m.SegmentStarted(segment_id=sid, worker_id="w1", device="cpu", pid=1),
    ]


def driver() -> Driver:
    d = Driver()
    d.feed(run_started(), m.WorkerHello(worker_id="w1", pid=1, device="cpu", hparams=ANNOUNCED, metrics=()))
    return d


def loss(step: int, value: float, grad: float = 0.5) -> m.MetricsObserved:
    return m.MetricsObserved(
        segment_id="s1", source="worker", step=step, metrics={"train_loss": value, "grad_norm": grad}
    )


def test_a_loss_spike_over_the_moving_median_tightens_clipping_once() -> None:
    d = driver()
    d.feed(*started(grad_clip_thresh=2.0))
    assert d.feed(*[loss(20 + 10 * i, 1.0 - 0.01 * i) for i in range(6)]) == []  # a falling loss: nothing
    (trip,) = d.feed(loss(80, 4.0))
    assert isinstance(trip, m.GuardTripped) and trip.guard == "loss_spike" and trip.hparams == {"grad_clip_thresh": 1.0}
    assert trip.evidence["ratio"] >= 3.0 and trip.evidence["train_loss"] == 4.0
    assert d.feed(loss(90, 5.0)) == []  # once per segment
    assert d.state.tuning.adjustments == {"grad_clip_thresh": 1.0}


def test_exploding_and_vanishing_gradients() -> None:
    d = driver()
    d.feed(*started())
    trips = d.feed(*[loss(20 + 10 * i, 1.0, grad=500.0) for i in range(3)])
    assert [t.guard for t in trips if isinstance(t, m.GuardTripped)] == ["grad_explode"]
    d2 = driver()
    d2.feed(*started())
    trips = d2.feed(*[loss(20 + 10 * i, 1.0, grad=1e-9) for i in range(3)])
    assert [(t.guard, t.hparams) for t in trips if isinstance(t, m.GuardTripped)] == [("grad_vanish", {})]


def test_nothing_is_judged_in_the_first_steps() -> None:
    d = driver()
    d.feed(*started())
    assert d.feed(loss(2, 1.0), loss(4, 1.0), loss(6, 9.0), loss(8, 1.0, grad=1e4)) == []


def test_a_nan_rolls_back_to_the_segment_start_with_half_the_learning_rate() -> None:
    d = driver()
    d.feed(*started(learning_rate=4e-3), loss(30, 1.0))
    trip, rollback = d.feed(m.SegmentFailed(segment_id="s1", reason="nan", detail="training loss is nan", step=41))
    assert isinstance(trip, m.GuardTripped) and trip.guard == "nan" and trip.evidence["last_finite_train_loss"] == 1.0
    assert isinstance(rollback, m.RollbackPerformed)
    assert (rollback.segment_id, rollback.to_checkpoint, rollback.to_step) == ("s1", "c0.pt", 0)
    assert rollback.hparams == {"learning_rate": 2e-3}
    assert d.state.tuning.segments["s1"].rollback == {"learning_rate": 2e-3}


def test_out_of_memory_halves_the_batch_and_scales_the_learning_rate() -> None:
    d = driver()
    d.feed(*started(learning_rate=1e-3, batch_size=32))
    trip, rollback = d.feed(m.SegmentFailed(segment_id="s1", reason="oom", detail="CUDA out of memory", step=3))
    assert isinstance(trip, m.GuardTripped) and trip.hparams == {"batch_size": 16}  # every later segment too
    assert isinstance(rollback, m.RollbackPerformed) and rollback.hparams["batch_size"] == 16
    assert abs(rollback.hparams["learning_rate"] - 1e-3 * 0.5**0.5) < 1e-12
    assert d.state.tuning.adjustments == {"batch_size": 16}


def test_attention_that_will_not_align_raises_the_guided_attention_weight() -> None:
    d = driver()
    d.feed(*started(start_step=250))
    early = m.SegmentFinished(
        segment_id="s1",
        end_step=350,
        metrics={"diagonality": 0.2, "val_objective": 1.0},
        checkpoint="c1.pt",
        checkpoint_sha256="cd",
        duration_s=1.0,
    )
    (trip,) = d.feed(early)
    assert isinstance(trip, m.GuardTripped) and trip.guard == "attention"
    assert trip.hparams == {"guided_attn_weight": 2.0} and trip.evidence["diagonality"] == 0.2
    d.feed(*started("s2", 350, guided_attn_weight=2.0))
    again = m.SegmentFinished(
        segment_id="s2",
        end_step=400,
        metrics={"diagonality": 0.3},
        checkpoint="c2.pt",
        checkpoint_sha256="ef",
        duration_s=1.0,
    )
    assert d.feed(again) == []  # within the cool-down of the last trip


def test_aligned_attention_before_the_alignment_phase_ends_is_left_alone() -> None:
    d = driver()
    d.feed(*started())
    young = m.SegmentFinished(
        segment_id="s1",
        end_step=100,
        metrics={"diagonality": 0.1},
        checkpoint="c1.pt",
        checkpoint_sha256="cd",
        duration_s=1.0,
    )
    assert d.feed(young) == []
