"""The worker process over real ZeroMQ sockets: two segments in one process, metrics, abort, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from smart_tuner.actors.bus.zmqbus import SocketOptions, WorkerServer, ipc_endpoints, new_context
from smart_tuner.protocol import Envelope, decode, encode
from smart_tuner.protocol import messages as m
from tests.helpers.procs import alive


def command(msg: m.Message) -> bytes:
    return encode(Envelope.new(msg, actor="supervisor"))


async def collect(server: WorkerServer, until: type, count: int, timeout_s: float = 240) -> list[Envelope]:
    """Messages from the worker (heartbeats included) until ``count`` of type ``until`` arrived."""
    got: list[Envelope] = []
    async with asyncio.timeout(timeout_s):
        while sum(isinstance(e.data, until) for e in got) < count:
            item = await server.recv(1.0)
            if item is not None:
                got.append(decode(item[1]))
    return got


@contextlib.asynccontextmanager
async def connected_process(
    tmp_path: Path, argv: Callable[[str], list[str]], env: dict[str, str] | None = None
) -> AsyncIterator[tuple[WorkerServer, subprocess.Popen[bytes]]]:
    """A real ROUTER and the process ``argv(endpoint)`` starts in a group of its own; killed (whole group)
    and the socket closed at exit."""
    ctx = new_context()
    server = WorkerServer(ctx, ipc_endpoints(tmp_path / "bus").workers, SocketOptions(linger_ms=0))
    proc = await asyncio.to_thread(subprocess.Popen, argv(server.endpoint), env=env, start_new_session=True)
    try:
        yield server, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        await server.aclose()
        ctx.term()


@contextlib.asynccontextmanager
async def worker_process(
    tmp_path: Path, data_dir: Path, worker_id: str, *extra: str
) -> AsyncIterator[tuple[WorkerServer, subprocess.Popen[bytes]]]:
    """A worker process of the tiny model connected to a real ROUTER; killed (whole group) at exit."""

    def argv(endpoint: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "smart_tuner.trainer.worker",
            "--endpoint",
            endpoint,
            "--worker-id",
            worker_id,
            "--dataset",
            "tiny",
            "--preset",
            "tiny",
            "--data-dir",
            str(data_dir),
            "--output-dir",
            str(tmp_path / "out"),
            "--threads",
            "1",
            "--val-count",
            "4",
            *extra,
        ]

    async with connected_process(tmp_path, argv) as connected:
        yield connected


def last(envs: list[Envelope], kind: type[m.Message]) -> m.Message:
    return [e.data for e in envs if isinstance(e.data, kind)][-1]


def test_worker_runs_segments_in_one_process(tiny_data_dir: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with worker_process(tmp_path, tiny_data_dir, "w0", "--heartbeat-s", "0.2") as (server, proc):
            hello = (await collect(server, m.WorkerHello, 1))[-1].data
            assert isinstance(hello, m.WorkerHello) and hello.pid == proc.pid and hello.device == "cpu"
            assert hello.hparams["learning_rate"]["class"] == "hot" and "val_objective" in hello.metrics

            run1 = m.RunSegment(
                segment_id="s1",
                from_checkpoint=None,
                from_sha256=None,
                hparams={"learning_rate": 3e-3},
                steps=4,
                eval_every=2,
                report_every=1,
            )
            await server.send(b"w0", command(run1))
            first = await collect(server, m.SegmentFinished, 1)
            done1 = next(e.data for e in first if isinstance(e.data, m.SegmentFinished))
            assert done1.end_step == 4 and await asyncio.to_thread(Path(done1.checkpoint).exists)
            started = [e.data for e in first if isinstance(e.data, m.SegmentStarted)]
            assert started[0].pid == proc.pid
            metrics = [e.data for e in first if isinstance(e.data, m.MetricsObserved)]
            assert [x.step for x in metrics if "train_loss" in x.metrics] == [1, 2, 3, 4]
            assert any("val_objective" in x.metrics for x in metrics)
            assert any(isinstance(e.data, m.Heartbeat) for e in first)

            run2 = m.RunSegment(
                segment_id="s2",
                from_checkpoint=done1.checkpoint,
                from_sha256=done1.checkpoint_sha256,
                hparams={"learning_rate": 1e-3, "batch_size": 2},
                steps=2,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"w0", command(run2))
            second = await collect(server, m.SegmentFinished, 1)
            applied = next(e.data for e in second if isinstance(e.data, m.HparamsApplied))
            assert applied.hparams == {"learning_rate": 1e-3, "batch_size": 2}
            assert applied.classes == {"learning_rate": "hot", "batch_size": "warm"}
            started2 = next(e.data for e in second if isinstance(e.data, m.SegmentStarted))
            assert started2.pid == proc.pid  # the same process: hot reload, no restart
            done2 = next(e.data for e in second if isinstance(e.data, m.SegmentFinished))
            assert done2.end_step == 6

            run3 = m.RunSegment(
                segment_id="s3",
                from_checkpoint=None,
                from_sha256=None,
                hparams={},
                steps=100_000,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"w0", command(run3))
            await collect(server, m.MetricsObserved, 1)
            await server.send(b"w0", command(m.AbortSegment(segment_id="s3", reason="test")))
            third = await collect(server, m.SegmentFailed, 1)
            failed = next(e.data for e in third if isinstance(e.data, m.SegmentFailed))
            assert failed.reason == "aborted" and failed.segment_id == "s3"

            await server.send(b"w0", command(m.Shutdown(reason="test over")))
            assert await asyncio.to_thread(proc.wait, 60) == 0

    asyncio.run(main())


def test_worker_reports_bad_segments_and_keeps_working(tiny_data_dir: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with worker_process(tmp_path, tiny_data_dir, "w1") as (server, proc):
            await collect(server, m.WorkerHello, 1)
            await server.send(b"w1", b"\x93garbage")  # malformed: counted and skipped
            cold = m.RunSegment(
                segment_id="c",
                from_checkpoint=None,
                from_sha256=None,
                hparams={"n_mel_channels": 40},
                steps=1,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"w1", command(cold))
            failed = last(await collect(server, m.SegmentFailed, 1), m.SegmentFailed)
            assert failed.reason == "error" and "n_mel_channels" in failed.detail
            nan = m.RunSegment(
                segment_id="n",
                from_checkpoint=None,
                from_sha256=None,
                hparams={"inject_nan_at_step": 2},
                steps=3,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"w1", command(nan))
            failed = last(await collect(server, m.SegmentFailed, 1), m.SegmentFailed)
            assert failed.reason == "nan" and failed.step == 2
            long_run = m.RunSegment(
                segment_id="long",
                from_checkpoint=None,
                from_sha256=None,
                hparams={},
                steps=100_000,
                eval_every=0,
                report_every=1,
            )
            queued = m.RunSegment(
                segment_id="queued",
                from_checkpoint=None,
                from_sha256=None,
                hparams={},
                steps=1,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"w1", command(long_run))
            await server.send(b"w1", command(queued))
            await collect(server, m.MetricsObserved, 1)
            await server.send(b"w1", command(m.AbortSegment(segment_id="queued", reason="changed my mind")))
            await server.send(b"w1", command(m.AbortSegment(segment_id="long", reason="enough")))
            ends = [e.data for e in await collect(server, m.SegmentFailed, 2) if isinstance(e.data, m.SegmentFailed)]
            assert [(f.segment_id, f.reason) for f in ends] == [("long", "aborted"), ("queued", "aborted")]
            assert ends[1].detail == "aborted before it started"
            ok = m.RunSegment(
                segment_id="ok",
                from_checkpoint=None,
                from_sha256=None,
                hparams={},
                steps=1,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"w1", command(ok))
            await collect(server, m.SegmentFinished, 1)
            await server.send(b"w1", command(m.Shutdown(reason="done")))
            assert await asyncio.to_thread(proc.wait, 60) == 0

    asyncio.run(main())


LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen([*sys.argv[1:], "--parent-pid", str(os.getpid())], start_new_session=True,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(proc.pid, flush=True)
"""  # starts a worker the way the supervisor does, then dies at once (as a kill -9'd coordinator would)


def test_a_worker_whose_supervisor_died_stops_by_itself(tiny_data_dir: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "smart_tuner.trainer.worker",
        "--endpoint",
        f"ipc://{tmp_path}/none",
        "--worker-id",
        "orphan",
        "--dataset",
        "tiny",
        "--preset",
        "tiny",
        "--data-dir",
        str(tiny_data_dir),
        "--output-dir",
        str(tmp_path / "out"),
        "--threads",
        "1",
        "--val-count",
        "4",
        "--heartbeat-s",
        "0.2",
    ]
    launcher = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True, check=True)
    pid = int(launcher.stdout.strip())  # its parent is gone already: init (or a subreaper) adopted it
    for _ in range(1200):  # 60 s: the trainer's start-up, then the worker notices and stops
        if not alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the orphaned worker was still running after 60 s")
