"""How many worker metric events per second the supervisor gets committed: batched relay vs one at a time.

    python bench/supervisor_relay.py [--events 2000] [--repeats 3] [--dir DIR]

The real path, in one run, both arms alternated so drift hits both alike: a worker
process (``trainer.client.SupervisorClient``, a DEALER over ipc) sends a hello and then
``--events`` ``MetricsObserved`` envelopes as fast as it can; the real ``SupervisorIO``
(ROUTER, the relay) proposes them to a real sequencer on an fsync'ed journal over ZeroMQ
ipc. Two arms differ in ``SupervisorPolicy.relay_batch`` alone:

* ``one``: ``relay_batch=1``, one proposal per worker message, each awaiting its ack
  (its group commit and fsync) before the next is read: the relay as it was;
* ``batched``: ``relay_batch=256`` (the default), what has arrived is relayed with one
  ``propose_payloads`` round trip and can land in one group commit.

The rate is the events committed divided by the time from the first metric's commit to
the last's (``Sequencer.on_commit``). It includes the worker's sends, the relay, the
sequencer's checks and fold, the journal's append and fsync, and the publish; it does not
include training (a real worker reports every few steps, so this is the ceiling, not the
rate of a run). Ends with ``RESULT one_per_s=… batched_per_s=… ratio=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from smart_tuner.actors.bus.zmqbus import (
    SocketOptions,
    WorkerServer,
    ZmqClient,
    ZmqSequencerPort,
    ipc_endpoints,
    new_context,
)
from smart_tuner.actors.sequencer import Sequencer, SequencerSettings
from smart_tuner.actors.supervisor.devices import DevicePool
from smart_tuner.actors.supervisor.io import SupervisorIO, SupervisorPolicy
from smart_tuner.actors.supervisor.launcher import WorkerSpec
from smart_tuner.protocol import Envelope
from smart_tuner.protocol import messages as m
from smart_tuner.state.journal import FileJournal
from smart_tuner.state.model import TunerState

# A worker that says hello, then reports as fast as its connection takes the messages.
WORKER = """
import asyncio, os, sys
from smart_tuner.protocol import messages as m
from smart_tuner.trainer.client import SupervisorClient, new_context
endpoint, events = sys.argv[1], int(sys.argv[2])

async def main():
    ctx = new_context()
    client = SupervisorClient(ctx, endpoint, "bench1")
    await client.send(m.WorkerHello(worker_id="bench1", pid=os.getpid(), device="cpu", hparams={},
                                    metrics=("train_loss",)))
    await asyncio.sleep(0.5)  # the hello is committed before the burst starts
    for i in range(1, events + 1):
        await client.send(m.MetricsObserved(segment_id=None, source="worker", step=i, metrics={"train_loss": 1.0 / i}))
    await asyncio.sleep(3600)  # killed by the bench once everything is committed

asyncio.run(main())
"""


async def arm(directory: Path, relay_batch: int, events: int) -> float:
    journal = FileJournal.open(directory / "events.log")
    ctx = new_context()
    port = ZmqSequencerPort(ctx, ipc_endpoints(directory / "bus"), SocketOptions(linger_ms=0))
    sequencer = Sequencer(journal, port, TunerState(), SequencerSettings(state_write_interval_s=3600))
    commits: list[float] = []
    all_committed = asyncio.Event()

    def on_commit(env: Envelope) -> None:
        if isinstance(env.data, m.MetricsObserved):
            commits.append(time.perf_counter())
            if len(commits) == events:
                all_committed.set()

    sequencer.on_commit(on_commit)
    task = asyncio.create_task(sequencer.run())
    await sequencer.ready.wait()
    client = ZmqClient(ctx, port.endpoints, SocketOptions(linger_ms=0), subscribe=False)
    started = m.RunStarted(
        run_id="bench", config_hash="0" * 64, config={}, strategy="forks", seed=0, host="bench", pid=0, version="bench"
    )
    await client.propose(Envelope.new(started, actor="bench"))
    server = WorkerServer(ctx, ipc_endpoints(directory / "wbus").workers, SocketOptions(linger_ms=0))
    policy = SupervisorPolicy(relay_batch=relay_batch)
    io = SupervisorIO(server, DevicePool.create(0), WorkerSpec(), client, directory, policy)
    io.accept_remote = True  # the bench's worker joins with its hello, as a worker started by hand does
    await io.start()
    worker = await asyncio.create_subprocess_exec(sys.executable, "-c", WORKER, server.endpoint, str(events))
    try:
        async with asyncio.timeout(600):
            await all_committed.wait()
    except TimeoutError:
        raise SystemExit(f"only {len(commits)} of {events} events committed in 600 s") from None
    finally:
        worker.kill()
        await worker.wait()
        await io.close()
        await server.aclose()
        await client.aclose()
        sequencer.stop()
        await task
        await port.aclose()
        ctx.term()
        journal.close()
    return (events - 1) / (commits[-1] - commits[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="metric events per arm")
    parser.add_argument("--repeats", type=int, default=3, help="times each arm runs (alternating)")
    parser.add_argument("--dir", type=Path, help="where the journals go (default: a temp dir)")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"one": [], "batched": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.repeats):
            for name, batch in (("one", 1), ("batched", 256)):
                directory = Path(tmp) / f"{name}-{r}"
                directory.mkdir()
                rate = asyncio.run(arm(directory, batch, args.events))
                rates[name].append(rate)
                print(f"{name:8s} repeat {r}: {rate:9.0f} events/s", file=sys.stderr, flush=True)
    one, batched = statistics.median(rates["one"]), statistics.median(rates["batched"])
    print(f"{'arm':8s} {'median events/s':>16s}")
    print(f"{'one':8s} {one:16.0f}")
    print(f"{'batched':8s} {batched:16.0f}")
    print(f"RESULT one_per_s={one:.0f} batched_per_s={batched:.0f} ratio={batched / one:.2f}")


if __name__ == "__main__":
    main()
