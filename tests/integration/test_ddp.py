"""Data-parallel training under torchrun on the CPU (gloo, 2 ranks): identical hyperparameters and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "tests" / "helpers" / "ddp_check.py"


def torchrun(tmp_path: Path, *extra: str) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(HELPER),
            str(tmp_path / "out"),
            str(tmp_path / "data"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert isinstance(result, dict)
    return result


@pytest.mark.slow
def test_a_hot_change_reaches_every_rank_and_the_weights_stay_identical(tmp_path: Path) -> None:
    result = torchrun(tmp_path)
    r0, r1 = result["ranks"]  # type: ignore[index, misc]
    assert result["failure"] is None
    assert r0["step"] == r1["step"] == 6
    assert (
        r0["hparams"]
        == r1["hparams"]
        == {"learning_rate": 5e-3, "p_encoder_dropout": 0.2, "grad_clip_thresh": 0.5, "adam_beta2": 0.98}
    )
    assert r0["optimizer"] == r1["optimizer"] == {"lr": 5e-3, "betas": [0.9, 0.98]}  # applied, not only recorded
    assert r0["dropout"] == r1["dropout"] == 0.2
    assert r0["weights"] == r1["weights"]  # 6 steps on different data slices, one optimizer step each time
    assert r0["checkpoints"] == ["s1.pt", "s2.pt"] and r1["checkpoints"] == []  # only rank 0 writes


@pytest.mark.slow
def test_a_nan_on_one_rank_fails_the_segment_on_every_rank_without_hanging(tmp_path: Path) -> None:
    result = torchrun(tmp_path, "fail")
    assert result["failure"] == {"reason": "nan", "step": 2}  # rank 1's NaN, raised by rank 0 too
    r0, r1 = result["ranks"]  # type: ignore[index, misc]
    # both stopped before step 2's optimizer step (its forward pass moved each rank's batch-norm
    # statistics on its own slice; the rollback to the segment's checkpoint discards them)
    assert r0["step"] == r1["step"] == 1 and r0["parameters"] == r1["parameters"]


@pytest.mark.slow
def test_the_worker_under_torchrun_runs_segments_aborts_and_shuts_down_every_rank(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    import asyncio

    from smart_tuner.protocol import messages as m
    from tests.integration.test_worker import collect, command, connected_process

    def argv(endpoint: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "smart_tuner.trainer.worker",
            "--endpoint",
            endpoint,
            "--worker-id",
            "w0",
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
            "2",
        ]

    async def main() -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        async with connected_process(tmp_path, argv, env) as (server, proc):
            await collect(server, m.WorkerHello, 1)  # rank 0 only: one worker as far as the supervisor sees
            run1 = m.RunSegment(
                segment_id="s1",
                from_checkpoint=None,
                from_sha256=None,
                hparams={},
                steps=2,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"w0", command(run1))
            done1 = next(
                e.data for e in await collect(server, m.SegmentFinished, 1) if isinstance(e.data, m.SegmentFinished)
            )
            run2 = m.RunSegment(
                segment_id="s2",
                from_checkpoint=done1.checkpoint,
                from_sha256=done1.checkpoint_sha256,
                hparams={"learning_rate": 4e-3},
                steps=2,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"w0", command(run2))
            second = await collect(server, m.SegmentFinished, 1)
            applied = next(e.data for e in second if isinstance(e.data, m.HparamsApplied))
            assert applied.hparams == {"learning_rate": 4e-3}
            done2 = next(e.data for e in second if isinstance(e.data, m.SegmentFinished))
            assert done2.end_step == 4 and "val_objective" in done2.metrics
            long = m.RunSegment(
                segment_id="s3",
                from_checkpoint=None,
                from_sha256=None,
                hparams={},
                steps=100_000,
                eval_every=0,
                report_every=1,
            )
            await server.send(b"w0", command(long))
            await collect(server, m.MetricsObserved, 1)
            await server.send(b"w0", command(m.AbortSegment(segment_id="s3", reason="test")))
            failed = next(
                e.data for e in await collect(server, m.SegmentFailed, 1) if isinstance(e.data, m.SegmentFailed)
            )
            assert failed.reason == "aborted"  # both ranks stopped at the same step: no hang
            await server.send(b"w0", command(m.Shutdown(reason="test over")))
            assert await asyncio.to_thread(proc.wait, 120) == 0  # rank 1 left its loop too

    asyncio.run(main())


def test_the_supervisor_starts_a_ddp_trial_under_torchrun(tiny_data_dir: Path, tmp_path: Path) -> None:
    """trainer.ddp_ranks=2 on the CPU: the supervisor's worker is a torchrun job of two gloo ranks; a rank
    that dies takes the job with it and the segment runs again."""
    import asyncio
    import signal

    from smart_tuner.actors.bus.zmqbus import SocketOptions, WorkerServer, ipc_endpoints, new_context
    from smart_tuner.actors.runtime import ActorShell
    from smart_tuner.actors.supervisor.core import Supervisor, SupervisorIO, SupervisorPolicy
    from smart_tuner.actors.supervisor.devices import DevicePool
    from smart_tuner.actors.supervisor.launcher import WorkerSpec
    from smart_tuner.protocol import messages as m
    from tests.helpers.procs import alive
    from tests.integration.test_supervisor import of, scheduled, wait_for
    from tests.unit.busharness import harness, propose, run_started

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
                val_count=2,
                heartbeat_s=0.2,
                ranks=2,
                env=(("OMP_NUM_THREADS", "1"),),
            )
            io = SupervisorIO(
                server, DevicePool.create(0), spec, h.client(), tmp_path, SupervisorPolicy(heartbeat_timeout_s=30)
            )
            c = h.client()
            await propose(c, run_started())
            shell = ActorShell(Supervisor(io), h.client(), h.journal, poll_s=0.05)
            task = asyncio.create_task(shell.run(lambda: None))
            try:
                await propose(c, scheduled("s1", 2))
                events = await wait_for(h, lambda ev: bool(of(ev, m.SegmentFinished, "s1")))
                s1 = of(events, m.SegmentFinished, "s1")[0]
                assert isinstance(s1, m.SegmentFinished) and s1.end_step == 2
                await propose(c, scheduled("s2", 2, s1.checkpoint, s1.checkpoint_sha256, learning_rate=4e-3))
                events = await wait_for(h, lambda ev: bool(of(ev, m.SegmentFinished, "s2")))
                hellos = of(events, m.WorkerHello)
                assert [x.device for x in hellos] == ["cpu x2"]  # type: ignore[attr-defined]  # one job, two ranks
                applied = of(events, m.HparamsApplied, "s2")[0]
                assert applied.hparams == {"learning_rate": 4e-3}  # type: ignore[attr-defined]
                assert not of(events, m.WorkerLost)  # the ranks' parent is torchrun's agent: not an orphan
                rank0 = hellos[0].pid  # type: ignore[attr-defined]

                # a rank dies mid-segment: rank 0's collective fails (the segment fails, naming it) or
                # torchrun ends the job first (the segment runs again on a new one); either way no rank hangs
                await propose(c, scheduled("s3", 100_000))
                await wait_for(h, lambda ev: bool(of(ev, m.MetricsObserved, "s3")))
                agent = io.workers["w1"].proc.pid  # type: ignore[union-attr]
                ranks = (await asyncio.to_thread(Path(f"/proc/{agent}/task/{agent}/children").read_text)).split()
                (rank1,) = [int(p) for p in ranks if int(p) != rank0]
                os.kill(rank1, signal.SIGKILL)

                def ended(ev: list[object]) -> bool:
                    return bool(of(ev, m.WorkerLost)) and (
                        bool(of(ev, m.SegmentFailed, "s3")) or len(of(ev, m.SegmentStarted, "s3")) == 2
                    )  # type: ignore[arg-type]

                events = await wait_for(h, ended, timeout_s=120)
                assert len(of(events, m.WorkerLost)) == 1
                failed = of(events, m.SegmentFailed, "s3")
                assert not failed or failed[0].reason == "error"  # type: ignore[attr-defined]
                assert not alive(rank0)  # the job went as a whole: no rank left waiting in a collective
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await server.aclose()
                ctx.term()
            assert not io.workers and io.pool.in_use == 0  # the second job stopped at teardown too

    asyncio.run(main())
