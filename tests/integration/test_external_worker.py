"""The external worker over real ZeroMQ sockets, driving a stand-in script: each way a segment ends.

``tests/helpers/fake_train.py`` behaves like NVIDIA's train.py (console lines, checkpoint_<i>
zip files, resume at iteration + 1) and can fail on demand; the worker must turn each
ending into the right event, with the step and a detail a user can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from smart_tuner.actors.bus.zmqbus import WorkerServer
from smart_tuner.actors.supervisor.launcher import EXTERNAL_SPEC_ENV
from smart_tuner.protocol import Envelope, decode
from smart_tuner.protocol import messages as m
from tests.helpers.procs import alive
from tests.integration.test_worker import collect, command, connected_process

FAKE = Path(__file__).resolve().parents[1] / "helpers" / "fake_train.py"


def spec(**over: Any) -> dict[str, Any]:
    base = {
        "command": [sys.executable, str(FAKE), "-o", "{output_dir}", "-c", "{checkpoint}", "--hparams", "{hparams}"],
        "hparams": {"learning_rate": 1e-3, "every": 5, "mode": "ok"},
        "tensorboard_dir": None,
        "sigint_timeout_s": 5,
        "sigterm_timeout_s": 5,
    }
    return {**base, **over}


@contextlib.asynccontextmanager
async def worker_process(tmp_path: Path, section: dict[str, Any]) -> AsyncIterator[tuple[WorkerServer, Any]]:
    """The external worker as the supervisor starts it, after its hello; killed (whole group) at exit."""

    def argv(endpoint: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "smart_tuner.actors.external.worker",
            "--endpoint",
            endpoint,
            "--worker-id",
            "x1",
            "--output-dir",
            str(tmp_path / "external"),
            "--heartbeat-s",
            "0.5",
        ]

    env = {**os.environ, EXTERNAL_SPEC_ENV: json.dumps(section)}
    async with connected_process(tmp_path, argv, env) as (server, proc):
        hello = await collect(server, m.WorkerHello, 1, timeout_s=60)
        assert isinstance(hello[-1].data, m.WorkerHello)
        yield server, proc


@contextlib.asynccontextmanager
async def external_worker(tmp_path: Path, section: dict[str, Any]) -> AsyncIterator[WorkerServer]:
    async with worker_process(tmp_path, section) as (server, _):
        yield server


async def segment(
    server: WorkerServer, sid: str, steps: int, hparams: dict[str, Any] | None = None, checkpoint: str | None = None
) -> list[Envelope]:
    run = m.RunSegment(
        segment_id=sid,
        from_checkpoint=checkpoint,
        from_sha256=None,
        hparams=hparams or {},
        steps=steps,
        eval_every=0,
        report_every=1,
    )
    await server.send(b"x1", command(run))
    got: list[Envelope] = []
    async with asyncio.timeout(120):
        while not any(isinstance(e.data, m.SegmentFinished | m.SegmentFailed) for e in got):
            item = await server.recv(1.0)
            if item is not None:
                got.append(decode(item[1]))
    return got


def ending(envs: list[Envelope]) -> m.Message:
    return next(e.data for e in envs if isinstance(e.data, m.SegmentFinished | m.SegmentFailed))


def test_segments_restart_from_checkpoints_and_end_at_the_planned_step(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[Envelope], list[Envelope]]:
        async with external_worker(tmp_path, spec()) as server:
            first = await segment(server, "s1", 10)
            end = ending(first)
            assert isinstance(end, m.SegmentFinished)
            second = await segment(server, "s2", 5, {"learning_rate": 3e-3}, end.checkpoint)
            return first, second

    first, second = asyncio.run(scenario())
    end1, end2 = ending(first), ending(second)
    assert isinstance(end1, m.SegmentFinished) and isinstance(end2, m.SegmentFinished)
    assert end1.end_step == 10 and Path(end1.checkpoint) == tmp_path / "external" / "s1" / "checkpoint_10"
    assert end1.metrics["val_objective"] == end1.metrics["val_loss"]  # the objective stands in for it
    assert end2.end_step == 15 and len(end2.checkpoint_sha256) == 64
    observed = [e.data for e in second if isinstance(e.data, m.MetricsObserved)]
    assert [o.step for o in observed if "train_loss" in o.metrics] == list(range(11, 16))  # resumed at 10 + 1
    assert all(o.source == "stdout" and o.segment_id == "s2" for o in observed)
    applied = next(e.data for e in second if isinstance(e.data, m.HparamsApplied))
    assert isinstance(applied, m.HparamsApplied) and applied.hparams["learning_rate"] == 3e-3 and applied.step == 10
    # the script stopped right after its checkpoint: nothing past step 15 was reported
    assert max(o.step for o in observed) == 15


@pytest.mark.parametrize(
    ("mode", "reason", "words", "step"),
    [
        ("nan@7", "nan", "train_loss was nan at step 7", 7),
        ("exit@4", "error", "exited with code 3 at step 3 before step 10; last lines:", 3),
        ("oom@6", "oom", "ran out of memory at step 5", 5),
        ("nosave", "error", "no complete 'checkpoint_*' at step >= 10", None),
        ("hang@6", "timeout", "no new step for 2 s", 5),
    ],
)
def test_each_way_a_script_fails_is_named(tmp_path: Path, mode: str, reason: str, words: str, step: int | None) -> None:
    section = spec(checkpoint_timeout_s=2, hang_timeout_s=2)

    async def scenario() -> list[Envelope]:
        async with external_worker(tmp_path, section) as server:
            return await segment(server, "s1", 10, {"mode": mode})

    failed = ending(asyncio.run(scenario()))
    assert isinstance(failed, m.SegmentFailed), failed
    assert failed.reason == reason and words in failed.detail, failed.detail
    if step is not None:
        assert failed.step == step


def test_the_script_is_given_its_own_name_for_a_hyperparameter_and_the_tuner_keeps_ours(tmp_path: Path) -> None:
    async def scenario() -> list[Envelope]:
        async with external_worker(tmp_path, spec(names={"learning_rate": "lr"})) as server:
            return await segment(server, "s1", 5, {"learning_rate": 3e-3})

    got = asyncio.run(scenario())
    assert isinstance(ending(got), m.SegmentFinished)
    command = json.loads((tmp_path / "external" / "s1" / "command.json").read_text())
    rendered = command["argv"][command["argv"].index("--hparams") + 1]
    assert "lr=0.003" in rendered.split(",") and "learning_rate" not in rendered
    applied = next(e.data for e in got if isinstance(e.data, m.HparamsApplied))
    assert isinstance(applied, m.HparamsApplied) and applied.hparams["learning_rate"] == 3e-3  # ours, on record


def test_a_checkpoint_the_script_damages_as_it_stops_is_not_handed_over(tmp_path: Path) -> None:
    """Coqui re-saves its checkpoint in place on SIGINT: stopped mid-write, the file that was complete
    is truncated. The worker checks it again after the stop and fails the segment, naming why."""

    async def scenario() -> list[Envelope]:
        section = spec(hparams={"learning_rate": 1e-3, "every": 5, "mode": "resave"}, sigint_timeout_s=1)
        async with external_worker(tmp_path, section) as server:
            return await segment(server, "s1", 10)

    end = ending(asyncio.run(scenario()))
    assert isinstance(end, m.SegmentFailed) and end.reason == "error", end
    assert "checkpoint_10 was complete when the script was asked to stop" in end.detail
    checkpoint = tmp_path / "external" / "s1" / "checkpoint_10"
    assert checkpoint.exists() and not zipfile.is_zipfile(checkpoint)  # truncated, and never reported as done


def test_an_abort_stops_the_script_and_a_rerun_keeps_the_first_attempt(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[Envelope], list[Envelope]]:
        async with external_worker(tmp_path, spec()) as server:
            run = m.RunSegment(
                segment_id="s1",
                from_checkpoint=None,
                from_sha256=None,
                hparams={},
                steps=100000,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"x1", command(run))
            got = await collect(server, m.MetricsObserved, 3)
            await server.send(b"x1", command(m.AbortSegment(segment_id="s1", reason="test")))
            got += await collect(server, m.SegmentFailed, 1)
            again = await segment(server, "s1", 5)
            return got, again

    aborted, again = asyncio.run(scenario())
    failed = ending(aborted)
    assert isinstance(failed, m.SegmentFailed) and failed.reason == "aborted"
    started = next(e.data for e in aborted if isinstance(e.data, m.SegmentStarted))
    assert isinstance(started, m.SegmentStarted)
    with pytest.raises(ProcessLookupError):
        os.kill(started.pid, 0)  # stopped and reaped
    assert isinstance(ending(again), m.SegmentFinished)
    assert (tmp_path / "external" / "s1.attempt-1" / "console.log").is_file()


def test_a_users_own_console_patterns_are_read(tmp_path: Path) -> None:
    """preset coqui has no console rules: only the config's own patterns can find the validation loss."""
    patterns = [
        r"Train loss (?P<step>\d+) (?P<train_loss>\S+) Grad Norm (?P<grad_norm>\S+)",
        r"Validation loss (?P<step>\d+): *(?P<val_loss>\S+)",
    ]

    async def scenario(section: dict[str, Any]) -> list[Envelope]:
        async with external_worker(tmp_path, section) as server:
            return await segment(server, "s1", 5)

    plain = ending(asyncio.run(scenario(spec(preset="coqui", hang_timeout_s=3))))
    assert isinstance(plain, m.SegmentFailed) and plain.reason == "timeout"  # without them no step is ever read
    unnamed = ending(asyncio.run(scenario(spec(preset="coqui", stdout_patterns=patterns))))
    # coqui's objective is its postnet mel loss, which these lines do not give: said, not guessed
    assert isinstance(unnamed, m.SegmentFailed) and "logged no val_mel_post_loss" in unnamed.detail
    own = ending(asyncio.run(scenario(spec(preset="coqui", stdout_patterns=patterns, objective="val_loss"))))
    assert isinstance(own, m.SegmentFinished) and own.end_step == 5
    assert own.metrics["val_objective"] == own.metrics["val_loss"]


@pytest.mark.parametrize("changes", [{"fmt": "raw"}, {"log_every": 3}, {"fmt": "raw", "log_every": 3, "every": 10}])
def test_odd_checkpoints_and_sparse_logs_still_end_at_the_checkpoint(tmp_path: Path, changes: dict[str, Any]) -> None:
    """A checkpoint that is no zip (complete once it stops changing), and a script whose logged steps
    jump over the target (0, 3, 6, 9, 12: step 10 is never printed, its checkpoint is saved)."""
    section = spec(hparams={"learning_rate": 1e-3, "every": 5, "mode": "ok", "log_every": 1, "fmt": "zip"})

    async def scenario() -> list[Envelope]:
        async with external_worker(tmp_path, section) as server:
            return await segment(server, "s1", 10, changes)

    end = ending(asyncio.run(scenario()))
    assert isinstance(end, m.SegmentFinished), end
    assert end.end_step == 10 and Path(end.checkpoint).name == "checkpoint_10"


def test_sigterm_to_the_worker_stops_the_script_first(tmp_path: Path) -> None:
    """The supervisor retires a worker with SIGTERM to its group; the script has a group of its own."""

    async def scenario() -> tuple[int, int | None]:
        async with worker_process(tmp_path, spec()) as (server, proc):
            run = m.RunSegment(
                segment_id="s1",
                from_checkpoint=None,
                from_sha256=None,
                hparams={},
                steps=100000,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"x1", command(run))
            got = await collect(server, m.MetricsObserved, 2)
            started = next(e.data for e in got if isinstance(e.data, m.SegmentStarted))
            assert isinstance(started, m.SegmentStarted)
            os.killpg(proc.pid, signal.SIGTERM)
            return started.pid, await asyncio.to_thread(proc.wait, 30)

    script_pid, code = asyncio.run(scenario())
    assert code == 0  # it ended as on Shutdown, not by the signal
    assert not alive(script_pid)
