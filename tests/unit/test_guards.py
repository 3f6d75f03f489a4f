"""Guard rails, driven by recorded metric sequences: each pathology, its evidence and its action."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

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
    "gate_pos_weight": {"default": 1.0, "class": "hot"},
    "weight_decay": {"default": 1e-6, "class": "hot"},
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
                self.guards.observe(committed)
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
    d.feed(*scheduled("s1", 20, 100, "c0.pt"))
    assert d.feed(*(grad("s1", 20 + 10 * i, 500.0) for i in range(3))) == []  # no history to compare with yet
    d.feed(*scheduled("s2", 120, 100, "c0.pt"))
    assert d.feed(*(grad("s2", 120 + 10 * i, 0.5) for i in range(3))) == []
    trips = d.feed(*(grad("s2", 150 + 10 * i, 500.0) for i in range(3)))
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


def finished(sid: str, end: int, **metrics: float) -> m.SegmentFinished:
    return m.SegmentFinished(
        segment_id=sid, end_step=end, metrics=metrics, checkpoint=f"{sid}.pt", checkpoint_sha256="cd", duration_s=1.0
    )


def scheduled(sid: str, start: int, steps: int, parent: str, trial: str | None = None, **hp: object) -> list[m.Message]:
    seg = m.SegmentScheduled(
        segment_id=sid,
        trial_id=trial,
        from_checkpoint=parent,
        from_sha256="ab",
        start_step=start,
        steps=steps,
        hparams=hp,
        reason="t",
        evidence={},
    )
    return [seg, m.SegmentStarted(segment_id=sid, worker_id="w1", device="cpu", pid=1)]


def grad(sid: str, step: int, value: float) -> m.MetricsObserved:
    return m.MetricsObserved(
        segment_id=sid, source="worker", step=step, metrics={"train_loss": 1.0, "grad_norm": value}
    )


def test_gradient_explosions_halve_clipping_a_bounded_number_of_times_then_give_up() -> None:
    """Halving the clip cannot lower the pre-clip norm the guard reads: before, a persistent norm
    halved clipping to 1.5e-5 (under the trainer's floor) in 16 segments and the run died of an
    HParamError. Each segment here is calm, then explodes."""
    d = driver()
    trips = []
    for n in range(16):
        sid, start = f"s{n}", 20 + 80 * n
        parent = f"s{n - 1}.pt" if n else "c0.pt"
        clip = d.state.tuning.adjustments.get("grad_clip_thresh", 1.0)
        d.feed(*scheduled(sid, start, 80, parent, grad_clip_thresh=clip))
        d.feed(*(grad(sid, start + 10 * i, 1.0) for i in range(1, 5)))
        trips += [
            t
            for t in d.feed(*(grad(sid, start + 40 + 10 * i, 500.0) for i in range(3)))
            if isinstance(t, m.GuardTripped)
        ]
        d.feed(finished(sid, start + 80, val_objective=1.0))
    assert [t.hparams.get("grad_clip_thresh") for t in trips[:4]] == [0.5, 0.25, 0.125, 0.0625]
    last = trips[4]
    assert last.gives_up and last.hparams == {} and "has corrected the lineage 4 times" in last.action
    assert d.state.tuning.adjustments["grad_clip_thresh"] == 0.0625  # never pushed further
    assert d.state.health.guards[-1].gave_up


def test_a_persistent_high_gradient_norm_is_the_models_own_and_trips_nothing() -> None:
    d = driver()
    for n in range(6):
        sid, start = f"s{n}", 20 + 40 * n
        d.feed(*scheduled(sid, start, 40, f"s{n - 1}.pt" if n else "c0.pt"))
        assert d.feed(*(grad(sid, start + 10 * i, 150.0) for i in range(4))) == []
        d.feed(finished(sid, start + 40, val_objective=1.0))


def test_a_correction_out_of_the_trainer_range_gives_up_instead() -> None:
    d = Driver()
    low = {**ANNOUNCED, "grad_clip_thresh": {"default": 1.0, "class": "hot", "low": 0.3, "high": 10.0}}
    d.feed(run_started(), m.WorkerHello(worker_id="w1", pid=1, device="cpu", hparams=low, metrics=()))
    d.feed(*scheduled("s1", 20, 100, "c0.pt", grad_clip_thresh=0.5))
    d.feed(*(grad("s1", 20 + i, 1.0) for i in range(3)))
    (trip,) = d.feed(*(grad("s1", 30 + 10 * i, 500.0) for i in range(1, 4)))
    assert isinstance(trip, m.GuardTripped) and trip.gives_up and trip.hparams == {}
    assert "grad_clip_thresh 0.25 would be under its floor 0.3" in trip.action


def test_out_of_memory_at_batch_size_one_gives_up() -> None:
    d = driver()
    d.feed(*started(batch_size=1))
    (trip,) = d.feed(m.SegmentFailed(segment_id="s1", reason="oom", detail="CUDA out of memory", step=3))
    assert isinstance(trip, m.GuardTripped) and trip.gives_up and "batch size 1" in trip.action


def test_a_challengers_spike_is_recorded_and_changes_nothing_for_the_run() -> None:
    d = driver()
    d.feed(
        m.TrialProposed(
            trial_id="t1", number=1, hparams={"learning_rate": 1e-2}, sampler="ladder", reason="r", evidence={}
        )
    )
    d.feed(*scheduled("s1", 20, 100, "c0.pt", trial="t1"))
    d.feed(*(grad("s1", 20 + i, 1.0) for i in range(3)))
    trips = [t for t in d.feed(*(grad("s1", 20 + 10 * i, 500.0) for i in range(1, 4))) if isinstance(t, m.GuardTripped)]
    assert [t.guard for t in trips] == ["grad_explode"] and trips[0].hparams == {} and not trips[0].gives_up
    assert "recorded for the probe only" in trips[0].action
    assert d.state.tuning.adjustments == {}


def test_attention_still_rising_is_left_to_align_and_a_large_budget_moves_the_alignment_phase() -> None:
    d = driver()
    d.feed(*scheduled("s1", 250, 100, "c0.pt"), finished("s1", 350, diagonality=0.2))
    d.feed(*scheduled("s2", 350, 300, "s1.pt"))
    assert d.feed(finished("s2", 650, diagonality=0.3)) == []  # 0.2 -> 0.3: aligning, if slowly
    big = Driver()
    config = {"budget": {"max_steps": 10_000}}
    big.feed(
        m.RunStarted(
            run_id="r", config_hash="h" * 64, config=config, strategy="none", seed=0, host="t", pid=1, version="t"
        ),
        m.WorkerHello(worker_id="w1", pid=1, device="cpu", hparams=ANNOUNCED, metrics=()),
    )
    big.feed(*scheduled("s1", 900, 600, "c0.pt"))
    assert big.feed(finished("s1", 1500, diagonality=0.2)) == []  # a fifth of 10,000 steps: not yet due
    big.feed(*scheduled("s2", 1500, 600, "s1.pt"))
    (trip,) = big.feed(finished("s2", 2100, diagonality=0.2))
    assert isinstance(trip, m.GuardTripped) and trip.guard == "attention"


def driver_with(guards: dict[str, object]) -> Driver:
    d = Driver()
    config = {"guards": guards}
    d.feed(
        m.RunStarted(
            run_id="r", config_hash="h" * 64, config=config, strategy="none", seed=0, host="t", pid=1, version="t"
        ),
        m.WorkerHello(worker_id="w1", pid=1, device="cpu", hparams=ANNOUNCED, metrics=()),
    )
    return d


def test_the_recorded_guards_section_sets_the_thresholds_and_the_tries() -> None:
    lax = driver_with({"grad_explode_norm": 1000.0})
    lax.feed(*scheduled("s1", 20, 100, "c0.pt"))
    lax.feed(*(grad("s1", 20 + i, 1.0) for i in range(3)))
    assert lax.feed(*(grad("s1", 20 + 10 * i, 500.0) for i in range(1, 4))) == []
    strict = driver_with({"max_tries": 1})
    for n in range(2):
        strict.feed(*scheduled(f"s{n}", 20 + 100 * n, 100, f"s{n - 1}.pt" if n else "c0.pt"))
        strict.feed(*(grad(f"s{n}", 20 + 100 * n + i, 1.0) for i in range(5)))
        strict.feed(*(grad(f"s{n}", 30 + 100 * n + 10 * i, 500.0) for i in range(1, 4)))
    first, second = [t for t in strict.out if isinstance(t, m.GuardTripped)]
    assert first.hparams == {"grad_clip_thresh": 0.5} and second.gives_up


def test_a_gradient_norm_that_is_high_but_usual_for_the_model_is_not_an_explosion() -> None:
    d = driver()
    d.feed(*scheduled("s1", 20, 200, "c0.pt"))
    usual = [grad("s1", 20 + 10 * i, 200.0) for i in range(1, 8)]  # a large model's norms run high
    assert d.feed(*usual, *(grad("s1", 100 + 10 * i, 300.0) for i in range(1, 4))) == []
    (trip,) = d.feed(*(grad("s1", 140 + 10 * i, 5000.0) for i in range(1, 4)))
    assert isinstance(trip, m.GuardTripped) and trip.guard == "grad_explode" and trip.evidence["earlier_median"] >= 200


def test_a_nan_at_the_lowest_learning_rate_the_trainer_takes_gives_up() -> None:
    d = Driver()
    floor = {**ANNOUNCED, "learning_rate": {"default": 1e-3, "class": "hot", "low": 1e-6, "high": 1.0}}
    d.feed(run_started(), m.WorkerHello(worker_id="w1", pid=1, device="cpu", hparams=floor, metrics=()))
    d.feed(*started(learning_rate=1.5e-6))
    (trip,) = d.feed(m.SegmentFailed(segment_id="s1", reason="nan", detail="loss is nan", step=30))
    assert isinstance(trip, m.GuardTripped) and trip.gives_up and "the trainer's floor 1e-06" in trip.action


def test_gate_trouble_after_the_alignment_phase_raises_the_stop_tokens_weight_once_per_cooldown() -> None:
    d = driver()
    d.feed(*scheduled("s0", 150, 100, "c0.pt"))
    assert d.feed(finished("s0", 250, gate_accuracy=0.5)) == []  # still aligning: not judged
    d.feed(*scheduled("s1", 250, 100, "s0.pt"))
    (trip,) = d.feed(finished("s1", 350, gate_accuracy=0.6, val_gate_loss=0.4))
    assert isinstance(trip, m.GuardTripped) and trip.guard == "gate" and trip.trial_id is None
    assert trip.hparams == {"gate_pos_weight": 2.0} and trip.evidence["gate_accuracy"] == 0.6
    assert d.state.tuning.adjustments == {"gate_pos_weight": 2.0}
    d.feed(*scheduled("s2", 350, 100, "s1.pt", gate_pos_weight=2.0))
    assert d.feed(finished("s2", 450, gate_accuracy=0.6)) == []  # within the 200-step cool-down
    d.feed(*scheduled("s3", 450, 150, "s2.pt", gate_pos_weight=2.0))
    (again,) = d.feed(finished("s3", 600, gate_accuracy=0.7))
    assert isinstance(again, m.GuardTripped) and again.hparams == {"gate_pos_weight": 4.0}
    d.feed(*scheduled("s4", 600, 100, "s3.pt"))
    assert d.feed(finished("s4", 700, gate_accuracy=0.95)) == []  # healthy


def test_validation_rising_while_training_falls_adds_weight_decay() -> None:
    d = driver()
    d.feed(*scheduled("s0", 300, 100, "c0.pt"))
    d.feed(
        *(
            m.MetricsObserved(segment_id="s0", source="worker", step=310 + i, metrics={"train_objective": 0.5})
            for i in range(3)
        )
    )
    d.feed(finished("s0", 400, val_objective=0.30))
    d.feed(*scheduled("s1", 400, 100, "s0.pt", weight_decay=1e-6))
    d.feed(
        *(
            m.MetricsObserved(segment_id="s1", source="worker", step=410 + i, metrics={"train_objective": 0.4})
            for i in range(3)
        )
    )
    (trip,) = d.feed(finished("s1", 500, val_objective=0.33))  # +10 % while training fell
    assert isinstance(trip, m.GuardTripped) and trip.guard == "divergence"
    assert trip.hparams == {"weight_decay": pytest.approx(1e-5)} and trip.evidence["val"] == [0.30, 0.33]
    d.feed(*scheduled("s2", 500, 300, "s1.pt", weight_decay=1e-5))
    d.feed(
        *(
            m.MetricsObserved(segment_id="s2", source="worker", step=510 + i, metrics={"train_objective": 0.35})
            for i in range(3)
        )
    )
    assert d.feed(finished("s2", 800, val_objective=0.32)) == []  # validation fell again: nothing


def race(strategy: str) -> Driver:
    """A run of ``strategy`` with a round of two trials from scratch, t0 and t1."""
    d = Driver()
    d.feed(
        dataclasses.replace(run_started(), strategy=strategy),
        m.WorkerHello(worker_id="w1", pid=1, device="cpu", hparams=ANNOUNCED, metrics=()),
    )
    for n, sampler in enumerate(("start", "tpe")):
        d.feed(m.TrialProposed(trial_id=f"t{n}", number=n, hparams={}, sampler=sampler, reason="r", evidence={}))
    d.feed(
        m.RoundPlanned(
            round=0,
            trials=("t0", "t1"),
            from_checkpoint=None,
            from_sha256=None,
            start_step=0,
            rung_steps=(300, 300),
            keep=(1, 1),
            reason="r",
            evidence={},
        )
    )
    return d


@pytest.mark.parametrize("strategy", ["trials", "pbt"])
def test_a_members_validation_is_watched_and_its_correction_is_its_own(strategy: str) -> None:
    """Before, the validation guards watched only the incumbent's trials: in trials and PBT a
    member whose attention never aligned was never helped. Now it is, and only it."""
    d = race(strategy)
    d.feed(*scheduled("a0", 0, 350, "init", trial="t0"), *scheduled("a1", 0, 350, "init", trial="t1"))
    assert d.feed(finished("a0", 350, diagonality=0.9)) == []
    (trip,) = d.feed(finished("a1", 350, diagonality=0.2))
    assert isinstance(trip, m.GuardTripped) and trip.guard == "attention" and trip.trial_id == "t1"
    assert d.state.tuning.adjustments == {}  # nothing for the run
    assert d.state.tuning.trials["t1"].adjustments == {"guided_attn_weight": 2.0}
    assert d.state.tuning.trials["t1"].effective_hparams() == {"guided_attn_weight": 2.0}
    assert d.state.tuning.trials["t0"].adjustments == {}

    # the scheduler gives t1's next rung its correction, t0's nothing
    from smart_tuner.actors.scheduler import plan_segment

    rnd = d.state.tuning.rounds[0]
    t0, t1 = d.state.tuning.trials["t0"], d.state.tuning.trials["t1"]
    assert plan_segment(d.state, rnd, t1, 1).hparams == {"guided_attn_weight": 2.0}
    assert "guided_attn_weight" not in plan_segment(d.state, rnd, t0, 1).hparams

    # another member in trouble at the same step trips for itself (its own cool-down)
    d.feed(*scheduled("b0", 350, 100, "a0.pt", trial="t0"))
    (other,) = d.feed(finished("b0", 450, diagonality=0.1))
    assert isinstance(other, m.GuardTripped) and other.trial_id == "t0"


def test_a_member_with_no_correction_left_is_left_to_the_race_and_the_run_goes_on() -> None:
    d = race("trials")
    sid, parent = "a", "init"
    trips = []
    for n in range(6):  # attention that never aligns, segment after segment (cool-down 200 steps)
        start = 300 + 250 * n
        weight = d.state.tuning.trials["t1"].effective_hparams().get("guided_attn_weight", 1.0)
        d.feed(*scheduled(f"{sid}{n}", start, 250, parent, trial="t1", guided_attn_weight=weight))
        trips += d.feed(finished(f"{sid}{n}", start + 250, diagonality=0.1))
        parent = f"{sid}{n}.pt"
    assert [t.hparams.get("guided_attn_weight") for t in trips[:4]] == [2.0, 4.0, 8.0, 16.0]  # max_tries 4
    last = trips[4]
    assert isinstance(last, m.GuardTripped) and last.hparams == {} and not last.gives_up
    assert "no correction left for t1" in last.action and "the race judges it" in last.action
    assert d.state.control.stop is None


def test_a_probes_out_of_memory_halves_the_probes_batch_not_the_runs() -> None:
    d = driver()
    d.feed(
        m.TrialProposed(trial_id="t1", number=1, hparams={"batch_size": 32}, sampler="wide", reason="r", evidence={})
    )
    d.feed(*scheduled("s1", 20, 100, "c0.pt", trial="t1", batch_size=32))
    trip, rollback = d.feed(m.SegmentFailed(segment_id="s1", reason="oom", detail="out of memory", step=25))
    assert isinstance(trip, m.GuardTripped) and trip.trial_id == "t1" and trip.hparams == {"batch_size": 16}
    assert isinstance(rollback, m.RollbackPerformed) and rollback.hparams["batch_size"] == 16
    assert d.state.tuning.adjustments == {} and d.state.tuning.trials["t1"].adjustments == {"batch_size": 16}
