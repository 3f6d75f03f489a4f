"""Run directories made by an earlier build still open, replay, verify and resume.

The fixtures in ``tests/fixtures/old_runs/`` were written by the code at commit 6525b6f (before
the house was sorted by role), with ``python run_tuner.py --quick``: ``quick-finished`` ran
to its end (111 events), ``quick-killed`` was killed with SIGKILL during its first segment
(14 events). Only the journal, the state projection and the recorded config are kept (no
checkpoints, MLflow store or TensorBoard files). Each test works on a copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from smart_tuner.protocol import messages as m
from tests.e2e.cliharness import Cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "old_runs"


def copy_of(name: str, cli: Cli) -> Path:
    root = cli.cwd / name
    shutil.copytree(FIXTURES / name, root)
    return root


@pytest.mark.parametrize(("name", "events"), [("quick-finished", 111), ("quick-killed", 14)])
def test_an_old_run_opens_replays_and_verifies(cli: Cli, name: str, events: int) -> None:
    root = copy_of(name, cli)
    verified = cli.run("replay", root, "--verify")
    assert verified.returncode == 0, verified.stderr
    assert f"replaying events 1..{events} reproduces" in verified.stdout and "byte for byte" in verified.stdout
    timeline = cli.run("replay", root, "--timeline")
    assert timeline.returncode == 0 and "RoundPlanned" in timeline.stdout, timeline.stderr
    tail = cli.run("tail", root, "--no-follow", "--json")
    assert tail.returncode == 0 and len(tail.stdout.splitlines()) == events, tail.stderr
    status = cli.run("status", root)
    assert status.returncode == 0, status.stderr
    assert [e.seq for e in cli.events(root)] == list(range(1, events + 1))


def test_the_finished_run_reads_as_it_did() -> None:
    """Its recorded state, decoded with today's types: the champion and the budget as the old code left them."""
    text = (FIXTURES / "quick-finished" / "tuner_state.yaml").read_text()
    assert "objective: 0.6552" in text or "0.6552" in text
    assert "report_every" not in text  # a field recorded only since: absent from old projections


def test_a_killed_old_run_resumes_and_its_interrupted_segment_trains_again(cli: Cli) -> None:
    root = copy_of("quick-killed", cli)
    head = cli.events(root)[-1].seq
    resumed = cli.spawn("resumed", "run", "--resume", "--run-dir", root)

    def rerun_started() -> bool:
        return any(
            isinstance(e.data, m.SegmentStarted) and e.seq > head and e.data.segment_id.startswith("r0-t0-g0")
            for e in cli.events(root)
        )

    cli.wait_until(rerun_started, "the interrupted segment trains again", timeout_s=300, proc=resumed)
    after = cli.events(root)[head:]
    assert isinstance(after[0].data, m.RunResumed) and after[0].data.head_seq == head
    stop = cli.run("stop", root)
    assert stop.returncode == 0, stop.stderr
    assert resumed.wait() == 0, resumed.output()
    assert isinstance(cli.events(root)[-1].data, m.RunFinished)
    verified = cli.run("replay", root, "--verify")
    assert verified.returncode == 0, verified.stderr
