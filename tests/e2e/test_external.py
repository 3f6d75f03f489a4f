"""External mode end to end: our NVIDIA-compatible train.py run as the user's own script.

A real coordinator; the supervisor's external worker restarts ``python -m
smart_tuner.trainer.train`` (tiny model) from the champion's checkpoint for every segment
with the hyperparameters on NVIDIA's ``--hparams``; metrics come from its console output
and its TensorBoard files; MLflow child runs and ``replay --verify`` as in native mode.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from smart_tuner.protocol import messages as m
from tests.e2e.cliharness import Cli
from tests.e2e.test_cli import assert_projections, assert_verifies
from tests.e2e.test_tuning import of
from tests.helpers.procs import alive


def external_config(cli: Cli, budget: int = 30, warmup: int = 10) -> Path:
    script = (
        f"{sys.executable} -m smart_tuner.trainer.train -o {{output_dir}} -l logs -c {{checkpoint}} "
        f"--hparams {{hparams}} --dataset tiny --preset tiny --data-dir {cli.cwd / 'data'} --threads 1 "
        "--val-count 4"
    )
    return cli.write_config(
        "external.yaml",
        f"""
budget: {{max_steps: {budget}}}
forks: {{warmup_steps: {warmup}, probe_steps: 5, exploit_steps: 5, first_round_candidates: 2}}
search_space:
  learning_rate: {{type: loguniform, low: 1.0e-4, high: 3.0e-2}}
trainer: {{heartbeat_s: 0.5}}
external:
  command: "{script}"
  hparams: {{learning_rate: 1.0e-3, p_decoder_dropout: 0.1, iters_per_checkpoint: 5}}
  sigint_timeout_s: 20
""",
    )


def test_a_users_script_is_tuned_by_restarts_from_its_checkpoints(cli: Cli) -> None:
    result = cli.run("run", "--config", external_config(cli), "--run-dir", "runs/ext")
    assert result.returncode == 0, result.stdout + result.stderr
    root = cli.cwd / "runs/ext"
    events = cli.events(root)
    assert isinstance(events[-1].data, m.RunFinished) and events[-1].data.status == "completed"
    scheduled = {s.segment_id: s for s in of(events, m.SegmentScheduled) if isinstance(s, m.SegmentScheduled)}
    finished = [f for f in of(events, m.SegmentFinished) if isinstance(f, m.SegmentFinished)]
    assert len(finished) == len(scheduled) >= 4 and not of(events, m.SegmentFailed)

    for f in finished:
        seg = scheduled[f.segment_id]
        folder = root / "external" / f.segment_id
        # the segment ran to its planned end and saved there: NVIDIA's checkpoint_<iteration>
        assert f.end_step == seg.start_step + seg.steps
        assert Path(f.checkpoint) == folder / f"checkpoint_{f.end_step}" and Path(f.checkpoint).is_file()
        argv = json.loads((folder / "command.json").read_text())["argv"]
        if seg.from_checkpoint is None:
            assert "-c" not in argv  # the first segment starts from scratch
        else:
            assert argv[argv.index("-c") + 1] == str(Path(seg.from_checkpoint).resolve())
        given = argv[argv.index("--hparams") + 1]
        assert f"learning_rate={seg.hparams['learning_rate']!r}" in given.split(",")
        assert "iters_per_checkpoint=5" in given.split(",")  # declared values go along every time
        # the objective is the script's own unweighted validation objective (TensorBoard)
        assert f.metrics["val_objective"] > 0 and "diagonality" in f.metrics

    # the ladder candidate trained at its rate: the script logged it, on TensorBoard
    ladder = next(s for s in scheduled.values() if s.hparams["learning_rate"] == 3e-3)
    observed = [o for o in of(events, m.MetricsObserved) if isinstance(o, m.MetricsObserved)]
    rates = {
        o.metrics["learning_rate"]
        for o in observed
        if o.segment_id == ladder.segment_id and "learning_rate" in o.metrics
    }
    assert rates and all(r == pytest.approx(3e-3, rel=1e-6) for r in rates)  # float32 in the event file
    sources = {o.source for o in observed}
    assert sources == {"stdout", "tensorboard"}
    applied = [a for a in of(events, m.HparamsApplied) if isinstance(a, m.HparamsApplied)]
    assert {a.segment_id for a in applied} == set(scheduled) and all(
        set(a.classes.values()) == {"restart"} for a in applied
    )
    assert_projections(root, events)  # one MLflow child per segment, a TensorBoard folder each
    assert_verifies(cli, root)


def test_kill_9_of_the_coordinator_leaves_no_script_running_and_resume_finishes(cli: Cli) -> None:
    config = external_config(cli, budget=30, warmup=20)
    first = cli.spawn("first", "run", "--config", config, "--run-dir", "runs/k9")
    root = cli.cwd / "runs/k9"

    def script_pid() -> int | None:
        started = [e.data for e in cli.events(root) if isinstance(e.data, m.SegmentStarted)]
        steps = [e.data.step for e in cli.events(root) if isinstance(e.data, m.MetricsObserved)]
        return started[0].pid if started and steps and max(steps) >= 3 else None

    cli.wait_until(script_pid, "the warm-up segment's script is training", proc=first)
    pid = script_pid()
    assert pid is not None
    os.killpg(first.pid, signal.SIGKILL)  # the coordinator: its external worker must notice and stop the script
    assert first.wait() == -signal.SIGKILL
    cli.wait_until(lambda: not alive(pid), "the script stops once its worker is gone", timeout_s=30)
    (hello,) = of(cli.events(root), m.WorkerHello)
    # and the worker itself exits: it once hung for good, its last reports waiting on a sender gone first
    cli.wait_until(lambda: not alive(hello.pid), "the orphaned external worker exits", timeout_s=30)

    resumed = cli.run("run", "--resume", "--run-dir", root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    events = cli.events(root)
    started = [s for s in of(events, m.SegmentStarted) if isinstance(s, m.SegmentStarted)]
    assert [s.segment_id for s in started].count("r0-t0-g0") == 2  # the same id, run again
    assert (root / "external" / "r0-t0-g0.attempt-1" / "console.log").is_file()  # the first try kept, aside
    assert isinstance(events[-1].data, m.RunFinished) and events[-1].data.status == "completed"
    assert_projections(root, events)
    assert_verifies(cli, root)
