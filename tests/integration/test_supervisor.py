"""The supervisor with real worker processes over real sockets: segments run, relayed, survived."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from smart_tuner.actors.bus.zmqbus import SocketOptions, WorkerServer, ipc_endpoints, new_context
from smart_tuner.actors.runtime import ActorShell
from smart_tuner.actors.supervisor.core import Supervisor, SupervisorIO, SupervisorPolicy
from smart_tuner.actors.supervisor.devices import DevicePool
from smart_tuner.actors.supervisor.launcher import WorkerSpec
from smart_tuner.protocol import Envelope
from smart_tuner.protocol import messages as m
from smart_tuner.state import history
from tests.unit.busharness import Harness, harness, propose, run_started


def scheduled(
    sid: str, steps: int, start: str | None = None, sha: str | None = None, **hp: object
) -> m.SegmentScheduled:
    return m.SegmentScheduled(
        segment_id=sid,
        trial_id=None,
        from_checkpoint=start,
        from_sha256=sha,
        start_step=0,
        steps=steps,
        hparams=hp,
        reason="test",
        evidence={},
    )


async def wait_for(h: Harness, predicate: Callable[[list[Envelope]], bool], timeout_s: float = 180) -> list[Envelope]:
    async with asyncio.timeout(timeout_s):
        while True:
            events = list(history.events(h.journal))
            if predicate(events):
                return events
            await asyncio.sleep(0.05)


def of(events: list[Envelope], kind: type, sid: str | None = None) -> list[m.Message]:
    found = [e.data for e in events if isinstance(e.data, kind)]
    return [d for d in found if sid is None or d.segment_id == sid]  # type: ignore[attr-defined]


def test_segments_run_on_one_kept_worker_and_survive_a_kill(tiny_data_dir: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with harness("inproc", tmp_path) as h:
            ctx = new_context()
            server = WorkerServer(ctx, ipc_endpoints(tmp_path / "bus").workers, SocketOptions(linger_ms=0))
            spec = WorkerSpec(
                dataset="tiny",
                preset="tiny",
                output_dir=tmp_path / "trainer",
                data_dir=tiny_data_dir,
                threads=1,
                val_count=4,
                heartbeat_s=0.2,
            )
            io = SupervisorIO(
                server,
                DevicePool.create(0),
                spec,
                h.client(),
                tmp_path,
                SupervisorPolicy(heartbeat_timeout_s=5, max_attempts=2),
            )
            c = h.client()
            await propose(c, run_started())
            shell = ActorShell(Supervisor(io), h.client(), h.journal, poll_s=0.05)
            ready = asyncio.Event()
            task = asyncio.create_task(shell.run(ready.set))
            try:
                await ready.wait()
                await propose(c, scheduled("s1", 3, learning_rate=3e-3))
                events = await wait_for(h, lambda ev: bool(of(ev, m.SegmentFinished, "s1")))
                s1 = of(events, m.SegmentFinished, "s1")[0]
                assert isinstance(s1, m.SegmentFinished) and s1.end_step == 3
                assert of(events, m.WorkerHello) and of(events, m.MetricsObserved, "s1")

                await propose(c, scheduled("s2", 2, s1.checkpoint, s1.checkpoint_sha256, learning_rate=1e-3))
                events = await wait_for(h, lambda ev: bool(of(ev, m.SegmentFinished, "s2")))
                starts = of(events, m.SegmentStarted)
                assert len(starts) == 2 and starts[0].pid == starts[1].pid  # type: ignore[attr-defined]
                applied = of(events, m.HparamsApplied, "s2")[0]
                assert applied.hparams == {"learning_rate": 1e-3}  # type: ignore[attr-defined]

                await propose(c, scheduled("s3", 100_000))
                await wait_for(h, lambda ev: bool(of(ev, m.MetricsObserved, "s3")))
                os.kill(starts[0].pid, signal.SIGKILL)  # type: ignore[attr-defined]
                events = await wait_for(h, lambda ev: len(of(ev, m.SegmentStarted, "s3")) == 2)
                lost = of(events, m.WorkerLost)
                assert len(lost) == 1 and "exited" in lost[0].reason  # type: ignore[attr-defined]
                restarted = of(events, m.SegmentStarted, "s3")
                assert restarted[1].pid != starts[0].pid  # type: ignore[attr-defined]
                state = h.sequencer.state
                assert state.tuning.segments["s3"].attempts == 2 and state.tuning.segments["s3"].status == "running"

                stop = m.StopDecided(rule="operator", reason="test over", evidence={})
                await propose(c, stop)
                events = await wait_for(h, lambda ev: bool(of(ev, m.SegmentFailed, "s3")))
                failed = of(events, m.SegmentFailed, "s3")[0]
                assert failed.reason == "aborted"  # type: ignore[attr-defined]
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await server.aclose()
                ctx.term()
            assert not io.workers and io.pool.in_use == 0  # teardown stopped every worker and freed the device

    asyncio.run(main())


def test_a_trainer_that_cannot_start_fails_its_segment_with_the_reason(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness("inproc", tmp_path) as h:
            ctx = new_context()
            server = WorkerServer(ctx, ipc_endpoints(tmp_path / "bus").workers, SocketOptions(linger_ms=0))
            spec = WorkerSpec(
                dataset=str(tmp_path / "no-such-corpus"),
                preset="tiny",
                output_dir=tmp_path / "t",
                threads=1,
                val_count=4,
            )
            io = SupervisorIO(
                server, DevicePool.create(0), spec, h.client(), tmp_path, SupervisorPolicy(max_start_failures=2)
            )
            c = h.client()
            await propose(c, run_started())
            await propose(c, scheduled("s0", 5))  # recorded before the supervisor (re)starts: resume picks it up
            shell = ActorShell(Supervisor(io), h.client(), h.journal, poll_s=0.05)
            task = asyncio.create_task(shell.run(lambda: None))
            try:
                events = await wait_for(h, lambda ev: bool(of(ev, m.SegmentFailed, "s0")), timeout_s=120)
                failed = of(events, m.SegmentFailed, "s0")[0]
                assert isinstance(failed, m.SegmentFailed)
                assert failed.reason == "error" and "2 workers in a row died" in failed.detail
                assert "no-such-corpus" in failed.detail  # the worker's own error
                assert not of(events, m.WorkerLost)  # they never said hello: nothing was lost
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await server.aclose()
                ctx.term()
            assert io.pool.in_use == 0

    asyncio.run(main())


@pytest.mark.parametrize(
    ("n_gpus", "ranks", "devices", "most"),
    [
        (2, 1, {"3", "5"}, 2),  # n_gpus=2 of a fake device list "3,5,7": two at once, on devices 3 and 5 only
        (4, 2, {"3,5", "7,9"}, 2),  # DDP trials of two GPUs each: two trials at once, each under torchrun
        (3, 2, {"3,5"}, 1),  # three GPUs hold one two-GPU trial at a time; the third GPU stays idle
    ],
)
def test_never_more_devices_than_n_gpus_each_worker_pinned_to_its_own(
    tmp_path: Path, n_gpus: int, ranks: int, devices: set[str], most: int
) -> None:
    """Five segments on a fake device list "3,5,7,9,11": never more GPUs in use than n_gpus."""

    async def main() -> list[Envelope]:
        async with harness("inproc", tmp_path) as h:
            ctx = new_context()
            server = WorkerServer(ctx, ipc_endpoints(tmp_path / "bus").workers, SocketOptions(linger_ms=0))
            # segments long enough that a second worker (torchrun takes seconds to start) gets one
            spec = WorkerSpec(
                module="tests.helpers.stub_worker",
                output_dir=tmp_path / "t",
                ranks=ranks,
                env=(("STUB_SEGMENT_S", "4"),),
            )
            pool = DevicePool.create(n_gpus, visible="3,5,7,9,11")
            io = SupervisorIO(server, pool, spec, h.client(), tmp_path, SupervisorPolicy(heartbeat_timeout_s=10))
            c = h.client()
            await propose(c, run_started())
            shell = ActorShell(Supervisor(io), h.client(), h.journal, poll_s=0.05)
            task = asyncio.create_task(shell.run(lambda: None))
            try:
                for i in range(5):
                    await propose(c, scheduled(f"s{i}", 10))
                return await wait_for(h, lambda ev: len(of(ev, m.SegmentFinished)) == 5, timeout_s=180)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await server.aclose()
                ctx.term()

    events = asyncio.run(main())
    hellos = of(events, m.WorkerHello)
    assert {h.device for h in hellos} == devices and len(hellos) == len(devices)  # type: ignore[attr-defined]
    running, peak = set(), 0
    for e in events:
        if isinstance(e.data, m.SegmentStarted):
            running.add(e.data.segment_id)
            peak = max(peak, len(running))
        elif isinstance(e.data, m.SegmentFinished):
            running.discard(e.data.segment_id)
    assert peak == most  # every free trial's worth of devices used at once, never more than n_gpus
