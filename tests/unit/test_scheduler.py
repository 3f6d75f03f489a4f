"""The worker's cadence is decided by the scheduler, recorded in SegmentScheduled, and run as recorded."""

from __future__ import annotations

from dataclasses import replace

from smart_tuner.actors.scheduler import EVAL_EVERY, report_cadence
from smart_tuner.actors.supervisor.io import _run_command
from smart_tuner.state.model import Segment


def segment(steps: int, report_every: int | None = None, eval_every: int | None = None) -> Segment:
    return Segment(
        segment_id="r1-t1-g0",
        trial_id="t1",
        status="scheduled",
        from_checkpoint="c.pt",
        from_sha256="ab",
        start_step=30,
        steps=steps,
        hparams={"learning_rate": 3e-3},
        reason="test",
        scheduled_seq=5,
        report_every=report_every,
        eval_every=eval_every,
    )


def test_report_cadence_is_about_ten_reports_a_segment_and_at_least_every_ten_steps() -> None:
    assert [report_cadence(n) for n in (1, 9, 30, 100, 150, 2000)] == [1, 1, 3, 10, 10, 10]


def test_the_supervisor_runs_the_recorded_cadence() -> None:
    cmd = _run_command(segment(150, report_every=7, eval_every=50))
    assert (cmd.report_every, cmd.eval_every, cmd.steps) == (7, 50, 150)
    assert cmd.hparams == {"learning_rate": 3e-3} and cmd.from_checkpoint == "c.pt"


def test_a_segment_from_an_older_log_gets_the_rule_that_was_applied_then() -> None:
    cmd = _run_command(segment(30))
    assert (cmd.report_every, cmd.eval_every) == (3, EVAL_EVERY) == (3, 0)
    assert _run_command(replace(segment(30), report_every=3, eval_every=0)) == cmd
