"""The worker's protocol loop winds down cleanly: a segment still stopping when the worker is told to
stop gets its last reports out, and the worker exits (it once hung for good, waiting on a sender
that had already left)."""

from __future__ import annotations

import asyncio
from typing import Any

from smart_tuner.protocol import Envelope, Message
from smart_tuner.protocol import messages as m
from smart_tuner.trainer.worker_loop import WorkerLoop


class FakeClient:
    """Stands in for SupervisorClient: commands from a queue, sends recorded."""

    worker_id = "w1"

    def __init__(self) -> None:
        self.commands: asyncio.Queue[Envelope] = asyncio.Queue()
        self.sent: list[Message] = []
        self.started = asyncio.Event()

    async def send(self, message: Message, **_: Any) -> None:
        self.sent.append(message)
        if isinstance(message, m.SegmentStarted):
            self.started.set()

    async def recv_command(self, timeout_s: float) -> Envelope | None:
        try:
            return await asyncio.wait_for(self.commands.get(), timeout_s)
        except TimeoutError:
            return None


class SlowToStop(WorkerLoop):
    """A segment that, once aborted, takes a while to stop and then reports what it read last,
    as the external worker does with a script's final log lines."""

    def hello(self) -> m.WorkerHello:
        return m.WorkerHello(worker_id="w1", pid=1, device="cpu", hparams={}, metrics=())

    def progress(self) -> int | None:
        return None

    async def run_segment(self, cmd: m.RunSegment) -> None:
        await self.send(m.SegmentStarted(segment_id=cmd.segment_id, worker_id="w1", device="cpu", pid=2))
        await asyncio.to_thread(self.abort.wait, 10)
        await self.stopping.wait()  # the loop has begun to end ...
        await asyncio.sleep(0.5)  # ... while the script takes its time to stop
        report = m.MetricsObserved(segment_id=cmd.segment_id, source="worker", step=3, metrics={"train_loss": 1.0})
        self.offer(report)
        await self.flush_reports()  # must not wait for a sender that is gone
        await self.send(m.SegmentFailed(segment_id=cmd.segment_id, reason="aborted", detail="stopped"))


def test_a_segment_stopping_after_the_worker_was_told_to_stop_still_reports_and_the_worker_exits() -> None:
    async def scenario() -> list[Message]:
        client = FakeClient()
        worker = SlowToStop(client, heartbeat_s=0.05, parent=None)  # type: ignore[arg-type]
        run = m.RunSegment(
            segment_id="s1",
            from_checkpoint=None,
            from_sha256=None,
            hparams={},
            steps=10,
            eval_every=0,
            report_every=1,
        )
        await client.commands.put(Envelope.new(run, actor="supervisor"))
        task = asyncio.create_task(worker.run())
        await client.started.wait()
        await client.commands.put(Envelope.new(m.Shutdown(reason="test"), actor="supervisor"))
        async with asyncio.timeout(10):  # hung for good before the fix
            await task
        return client.sent

    sent = asyncio.run(scenario())
    kinds = [type(x).__name__ for x in sent if not isinstance(x, m.Heartbeat)]
    assert kinds == ["WorkerHello", "SegmentStarted", "MetricsObserved", "SegmentFailed"]
