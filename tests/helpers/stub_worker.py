"""A worker that speaks the supervisor's protocol without torch: for tests of scheduling and devices.

    python -m tests.helpers.stub_worker --endpoint E --worker-id W [any trainer option, ignored]

Announces ``device`` as the ``CUDA_VISIBLE_DEVICES`` it was started with (under torchrun, rank 0
only; the other ranks exit at once), then answers each
``RunSegment`` after ``STUB_SEGMENT_S`` seconds with a ``SegmentFinished`` (a fake checkpoint
and objective), heartbeating meanwhile, until ``Shutdown``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from smart_tuner.actors.bus.zmqbus import new_context
from smart_tuner.protocol import messages as m
from smart_tuner.trainer.client import SupervisorClient

SEGMENT_S = float(os.environ.get("STUB_SEGMENT_S", "0.5"))


async def serve(endpoint: str, worker_id: str) -> None:
    ctx = new_context()
    client = SupervisorClient(ctx, endpoint, worker_id)
    device = os.environ.get("CUDA_VISIBLE_DEVICES", "?")
    try:
        await client.send(m.WorkerHello(worker_id=worker_id, pid=os.getpid(), device=device, hparams={}, metrics=()))
        while True:
            env = await client.recv_command(0.2)
            await client.send(m.Heartbeat(worker_id=worker_id))
            if env is None:
                continue
            cmd = env.data
            if isinstance(cmd, m.Shutdown):
                return
            if isinstance(cmd, m.RunSegment):
                await client.send(
                    m.SegmentStarted(segment_id=cmd.segment_id, worker_id=worker_id, device=device, pid=os.getpid())
                )
                t0 = time.monotonic()
                while time.monotonic() - t0 < SEGMENT_S:
                    await asyncio.sleep(0.1)
                    await client.send(m.Heartbeat(worker_id=worker_id))
                await client.send(
                    m.SegmentFinished(
                        segment_id=cmd.segment_id,
                        end_step=cmd.steps,
                        metrics={"val_objective": 1.0, "diagonality": 1.0},
                        checkpoint=f"/stub/{cmd.segment_id}.pt",
                        checkpoint_sha256="0" * 64,
                        duration_s=SEGMENT_S,
                    )
                )
    finally:
        await client.aclose()
        ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--worker-id", required=True)
    args, _ = parser.parse_known_args()
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun (a DDP trial): only rank 0 speaks to the supervisor
    asyncio.run(serve(args.endpoint, args.worker_id))


if __name__ == "__main__":
    main()
