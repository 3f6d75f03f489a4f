"""Whole tuning runs with the tiny model, as a user starts them: faults injected, processes killed.

Real coordinator and worker processes, real sockets, a real MLflow sqlite store and real
TensorBoard files; each test ends with ``replay --verify``.
"""

from __future__ import annotations

import os
import signal

from smart_tuner.protocol import Envelope
from smart_tuner.protocol import messages as m
from tests.e2e.cliharness import Cli
from tests.e2e.test_cli import TINY_TRAINER, assert_projections, assert_verifies


def of(events: list[Envelope], kind: type) -> list[object]:
    return [e.data for e in events if isinstance(e.data, kind)]


def test_an_injected_nan_trips_the_guard_rolls_back_and_the_run_goes_on(cli: Cli) -> None:
    config = cli.write_config(
        "nan.yaml",
        (
            "budget: {max_steps: 40}\nforks: {warmup_steps: 10, probe_steps: 5, exploit_steps: 10, "
            "first_round_candidates: 2}\n"
            + TINY_TRAINER.replace("heartbeat_s: 0.5}", "heartbeat_s: 0.5, hparams: {inject_nan_at_step: 13}}")
        ),
    )
    result = cli.run("run", "--config", config, "--run-dir", "runs/nan")
    assert result.returncode == 0, result.stdout + result.stderr
    root = cli.cwd / "runs/nan"
    events = cli.events(root)
    failed = [f for f in of(events, m.SegmentFailed) if isinstance(f, m.SegmentFailed)]
    assert [(f.reason, f.step) for f in failed] == [("nan", 13)]
    trips = [g for g in of(events, m.GuardTripped) if isinstance(g, m.GuardTripped) and g.guard == "nan"]
    rollbacks = [r for r in of(events, m.RollbackPerformed) if isinstance(r, m.RollbackPerformed)]
    assert len(trips) == 1 and trips[0].segment_id == failed[0].segment_id and trips[0].evidence["step"] == 13
    assert len(rollbacks) == 1 and rollbacks[0].segment_id == failed[0].segment_id
    assert rollbacks[0].to_step == 10 and rollbacks[0].hparams["learning_rate"] == 5e-4
    rerun = [
        f
        for f in of(events, m.SegmentFinished)
        if isinstance(f, m.SegmentFinished) and f.segment_id == failed[0].segment_id + "-rb1"
    ]
    assert len(rerun) == 1 and rerun[0].end_step == 15  # the same rung, from the same checkpoint
    assert "guard nan tripped" in result.stderr  # the console alert
    finished = of(events, m.RunFinished)[-1]
    assert isinstance(finished, m.RunFinished) and finished.status == "completed"
    assert finished.summary["rollbacks"] == 1
    assert_verifies(cli, root)


def test_kill_9_of_the_coordinator_mid_segment_then_resume_finishes_the_run(cli: Cli) -> None:
    config = cli.write_config(
        "long.yaml",
        (
            "budget: {max_steps: 60}\nforks: {warmup_steps: 40, probe_steps: 5, exploit_steps: 10, "
            "first_round_candidates: 2}\n" + TINY_TRAINER
        ),
    )
    first = cli.spawn("first", "run", "--config", config, "--run-dir", "runs/k9")
    root = cli.cwd / "runs/k9"

    def mid_warmup() -> bool:
        steps = [e.data.step for e in cli.events(root) if isinstance(e.data, m.MetricsObserved)]
        return bool(steps) and 0 < max(steps) < 40

    cli.wait_until(mid_warmup, "the warm-up segment is reporting", proc=first)
    os.killpg(first.pid, signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    before = cli.events(root)
    assert not of(before, m.SegmentFinished)
    assert_verifies(cli, root)

    resumed = cli.run("run", "--resume", "--run-dir", root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    events = cli.events(root)
    started = [s for s in of(events, m.SegmentStarted) if isinstance(s, m.SegmentStarted)]
    warmup = [s for s in started if s.segment_id == "r0-t0-g0"]
    assert len(warmup) == 2 and warmup[0].worker_id != warmup[1].worker_id  # the same id, run again
    assert [s.segment_id for s in of(events, m.SegmentScheduled)].count("r0-t0-g0") == 1
    finished = [f for f in of(events, m.SegmentFinished) if isinstance(f, m.SegmentFinished)]
    assert [f.segment_id for f in finished].count("r0-t0-g0") == 1 and finished[0].end_step == 40
    assert isinstance(events[-1].data, m.RunFinished) and events[-1].data.status == "completed"
    assert of(events, m.RunResumed)
    assert_projections(root, events)  # one MLflow child per segment: the re-run made no duplicate
    assert_verifies(cli, root)


def test_kill_9_of_a_worker_mid_segment_restarts_it_and_the_run_completes(cli: Cli) -> None:
    config = cli.write_config(
        "w.yaml",
        (
            "budget: {max_steps: 50}\nforks: {warmup_steps: 40, probe_steps: 5, exploit_steps: 5, "
            "first_round_candidates: 2}\n" + TINY_TRAINER
        ),
    )
    coordinator = cli.spawn("coordinator", "run", "--config", config, "--run-dir", "runs/w")
    root = cli.cwd / "runs/w"

    def worker_mid_segment() -> int | None:
        events = cli.events(root)
        hello = [e.data for e in events if isinstance(e.data, m.WorkerHello)]
        steps = [e.data.step for e in events if isinstance(e.data, m.MetricsObserved)]
        return hello[0].pid if hello and steps and max(steps) < 40 else None

    cli.wait_until(worker_mid_segment, "the first worker is training", proc=coordinator)
    pid = worker_mid_segment()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert coordinator.wait() == 0, coordinator.output()
    events = cli.events(root)
    lost = [e for e in of(events, m.WorkerLost) if isinstance(e, m.WorkerLost)]
    assert len(lost) == 1 and "exited" in lost[0].reason
    warmup = [s for s in of(events, m.SegmentStarted) if isinstance(s, m.SegmentStarted) and s.segment_id == "r0-t0-g0"]
    assert len(warmup) == 2 and warmup[0].worker_id != warmup[1].worker_id  # a new worker, the same segment
    assert isinstance(events[-1].data, m.RunFinished) and events[-1].data.status == "completed"
    assert_verifies(cli, root)


def test_a_pbt_run_with_real_workers_mirrored_into_an_optuna_storage(cli: Cli) -> None:
    import optuna

    storage = f"sqlite:///{cli.cwd / 'optuna.db'}"
    config = cli.write_config(
        "pbt.yaml",
        (
            f"strategy: pbt\noptuna_storage: '{storage}'\nbudget: {{max_steps: 48}}\n"
            "pbt: {population: 3, interval_steps: 8}\n" + TINY_TRAINER
        ),
    )
    result = cli.run("run", "--config", config, "--run-dir", "runs/pbt")
    assert result.returncode == 0, result.stdout + result.stderr
    root = cli.cwd / "runs/pbt"
    events = cli.events(root)
    plans = [p for p in of(events, m.RoundPlanned) if isinstance(p, m.RoundPlanned)]
    assert [len(p.trials) for p in plans] == [3, 3]  # 2 generations x 3 members x 8 steps = 48
    finished = {f.segment_id: f for f in of(events, m.SegmentFinished) if isinstance(f, m.SegmentFinished)}
    scheduled = {s.trial_id: s for s in of(events, m.SegmentScheduled) if isinstance(s, m.SegmentScheduled)}
    for trial_id, origin in plans[1].starts.items():  # each member continues from a real checkpoint
        assert scheduled[trial_id].from_checkpoint == finished[origin].checkpoint
        assert scheduled[trial_id].start_step == 8
    stop = of(events, m.StopDecided)[-1]
    assert isinstance(stop, m.StopDecided) and stop.rule == "budget_steps"
    assert_projections(root, events)
    study = optuna.load_study(study_name=root.name, storage=storage)
    assert sorted(t.user_attrs["smart_tuner.trial_id"] for t in study.get_trials()) == sorted(scheduled)
    assert_verifies(cli, root)


def test_a_run_over_tcp_with_curve_keys_never_writes_the_secret(cli: Cli) -> None:
    made = cli.run("keys", "keys")
    assert made.returncode == 0, made.stderr
    secret_file = cli.cwd / "keys" / "coordinator.key_secret"
    secret = next(line.split('"')[1] for line in secret_file.read_text().splitlines() if "secret-key" in line)
    config = cli.write_config(
        "curve.yaml",
        (
            "bus: {transport: tcp, host: 127.0.0.1, curve_server_secret: '${ST_TEST_CURVE}'}\n"
            "budget: {max_steps: 20}\nforks: {warmup_steps: 10, probe_steps: 5, exploit_steps: 5, "
            "first_round_candidates: 2}\n" + TINY_TRAINER
        ),
    )
    result = cli.run("run", "--config", config, "--run-dir", "runs/curve", env={"ST_TEST_CURVE": secret})
    assert result.returncode == 0, result.stdout + result.stderr
    root = cli.cwd / "runs/curve"
    events = cli.events(root)
    assert of(events, m.WorkerHello) and isinstance(events[-1].data, m.RunFinished)
    assert events[-1].data.status == "completed"  # the local worker got in with the coordinator's own key pair
    logged = (root / "logs" / "coordinator.jsonl").read_text()
    assert "worker channel encrypted (CURVE)" in logged and '"allowed_keys": 1' in logged
    for path in root.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in result.stdout + result.stderr
    assert_verifies(cli, root)
