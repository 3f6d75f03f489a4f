"""Event log benchmark: acknowledged append latency, batched rate, replay of 1 M events, YAML write.

    python bench/eventlog.py [--events 1000000] [--acks 2000] [--dir DIR]

Everything runs side by side in one process on a real file journal with fsync on:

* ack latency: one proposer, one event at a time, through the real sequencer
  (decode, validate, apply, group append + fdatasync in a worker thread, ack),
  from an in-process client and from a ZeroMQ ipc client;
* batched rate: 8 producers proposing bursts of 250 events (``propose_many``)
  through the sequencer (validation, group commit), in-process and over
  ZeroMQ; 64 producers that wait for every single ack; and the raw journal
  appending groups of 1000 records with one fsync each;
* replay: a 1 M-event log (metric stream plus segment and trial lifecycles)
  folded from seq 1 into the state, no snapshot;
* YAML: rendering and atomically writing that state's tuner_state.yaml.

Ends with ``RESULT replay_1m_s=… ack_p50_ms=… ack_p99_ms=… batched_per_s=… yaml_write_s=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from smart_tuner.actors.bus import BusClient, InprocHub, SequencerPort
from smart_tuner.actors.bus.zmqbus import SocketOptions, ZmqClient, ZmqSequencerPort, ipc_endpoints, new_context
from smart_tuner.actors.sequencer import Sequencer, SequencerSettings
from smart_tuner.protocol import Envelope, encode
from smart_tuner.protocol import messages as m
from smart_tuner.state import history, projection
from smart_tuner.state.journal import FileJournal
from smart_tuner.state.model import TunerState


def started() -> m.RunStarted:
    return m.RunStarted(
        run_id="bench",
        config_hash="0" * 64,
        config={"strategy": "forks"},
        strategy="forks",
        seed=0,
        host="bench",
        pid=0,
        version="bench",
    )


def metric(step: int) -> m.MetricsObserved:
    return m.MetricsObserved(
        segment_id=f"s{step // 200}",
        source="worker",
        step=step,
        metrics={"train_loss": 0.5 + 1.0 / (1 + step), "grad_norm": 1.25, "learning_rate": 1e-3, "step_time_s": 0.41},
    )


def realistic_events(n: int) -> list[m.Message]:
    """A tuning run's shape: every 200 steps a trial and a segment, a metric event per step."""
    out: list[m.Message] = [started()]
    step = 0
    while len(out) < n:
        k = step // 200
        if step % 200 == 0:
            hp = {"learning_rate": 1e-3 * (1 + k % 7), "batch_size": 16}
            evidence = {"sampler": "tpe", "n_complete": k}
            out.append(
                m.TrialProposed(
                    trial_id=f"t{k}", number=k, hparams=hp, sampler="tpe", reason="sampled", evidence=evidence
                )
            )
            out.append(
                m.SegmentScheduled(
                    segment_id=f"s{k}",
                    trial_id=f"t{k}",
                    from_checkpoint="ckpt",
                    from_sha256="a" * 64,
                    start_step=step,
                    steps=200,
                    hparams=hp,
                    reason="fork",
                    evidence={},
                )
            )
            out.append(m.SegmentStarted(segment_id=f"s{k}", worker_id="w0", device="cpu", pid=1))
        out.append(metric(step))
        step += 1
        if step % 200 == 0:
            final = {"val_loss": 0.3, "diag": 0.9}
            out.append(
                m.SegmentFinished(
                    segment_id=f"s{k}",
                    end_step=step,
                    metrics=final,
                    checkpoint=f"ckpt-{k}",
                    checkpoint_sha256="b" * 64,
                    duration_s=80.0,
                )
            )
    return out[:n]


def write_log(path: Path, n: int) -> float:
    t0 = time.perf_counter()
    journal = FileJournal.open(path, fsync=False)
    batch: list[bytes] = []
    for seq, msg in enumerate(realistic_events(n), 1):
        batch.append(
            encode(
                Envelope(
                    seq=seq,
                    id=f"{seq:032x}",
                    ts=1.7e9 + seq,
                    type=msg.TYPE,
                    tv=msg.TV,
                    actor="bench",
                    corr=None,
                    cause=None,
                    data=msg,
                )
            )
        )
        if len(batch) == 10_000:
            journal.append(batch)
            batch.clear()
    journal.append(batch)
    journal.close()
    return time.perf_counter() - t0


async def with_sequencer(directory: Path, kind: str, work: object) -> object:
    """Run ``work(make_client)`` against a real sequencer on a fresh fsync'ed journal."""
    journal = FileJournal.open(directory / f"events-{kind}-{time.monotonic_ns()}.log")
    ctx = new_context() if kind == "zmq" else None
    port: SequencerPort
    if ctx is not None:
        zport = ZmqSequencerPort(ctx, ipc_endpoints(directory / "bus"), SocketOptions(linger_ms=0))
        port = zport

        def make_client() -> BusClient:
            return ZmqClient(ctx, zport.endpoints, SocketOptions(linger_ms=0), subscribe=False)
    else:
        hub = InprocHub()
        port = hub.sequencer_port()

        def make_client() -> BusClient:
            return hub.client("bench", subscribe=False)

        def make_actor_feed() -> BusClient:
            return hub.client("actor")

    sequencer = Sequencer(journal, port, TunerState(), SequencerSettings(state_write_interval_s=3600))
    task = asyncio.create_task(sequencer.run())
    await sequencer.ready.wait()
    # A run's seven actors listen to the feed and keep up with it (they drain; decoding is their cost, not ours).
    subscribers = [make_actor_feed() for _ in range(7)] if kind == "inproc" else []

    async def drain(feed: BusClient) -> None:
        while True:
            await feed.recv(3600)

    drains = [asyncio.create_task(drain(s)) for s in subscribers]
    try:
        client = make_client()
        await client.propose(Envelope.new(started(), actor="bench"))
        await client.aclose()
        return await work(make_client)  # type: ignore[operator]
    finally:
        for d in drains:
            d.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        sequencer.stop()
        await task
        for s in subscribers:
            await s.aclose()
        await port.aclose()
        if ctx is not None:
            ctx.term()
        journal.close()


async def ack_latencies(make_client: object, n: int) -> list[float]:
    client: BusClient = make_client()  # type: ignore[operator]
    out = []
    for i in range(n):
        env = Envelope.new(metric(i), actor="bench")
        t0 = time.perf_counter()
        await client.propose(env)
        out.append(time.perf_counter() - t0)
    await client.aclose()
    return out


async def batched_rate(make_client: object, proposers: int, bursts: int, burst: int) -> float:
    """Producers that propose bursts (``propose_many``), as a watcher does with a burst of logged metrics."""
    clients: list[BusClient] = [make_client() for _ in range(proposers)]  # type: ignore[operator]

    async def produce(c: BusClient, k: int) -> None:
        for b in range(bursts):
            base = (k * bursts + b) * burst
            acks = await c.propose_many([Envelope.new(metric(base + i), actor="bench") for i in range(burst)])
            assert all(a.ok for a in acks)

    t0 = time.perf_counter()
    await asyncio.gather(*(produce(c, k) for k, c in enumerate(clients)))
    rate = proposers * bursts * burst / (time.perf_counter() - t0)
    for c in clients:
        await c.aclose()
    return rate


async def one_by_one_rate(make_client: object, proposers: int, each: int) -> float:
    """Producers that each wait for one ack before proposing the next event."""
    clients: list[BusClient] = [make_client() for _ in range(proposers)]  # type: ignore[operator]

    async def produce(c: BusClient, k: int) -> None:
        for i in range(each):
            await c.propose(Envelope.new(metric(k * each + i), actor="bench"))

    t0 = time.perf_counter()
    await asyncio.gather(*(produce(c, k) for k, c in enumerate(clients)))
    rate = proposers * each / (time.perf_counter() - t0)
    for c in clients:
        await c.aclose()
    return rate


def raw_journal_rate(path: Path, groups: int, group: int) -> float:
    journal = FileJournal.open(path)
    payload = encode(Envelope.new(metric(1), actor="bench"))
    t0 = time.perf_counter()
    for _ in range(groups):
        journal.append([payload] * group)
    rate = groups * group / (time.perf_counter() - t0)
    journal.close()
    return rate


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--acks", type=int, default=2000)
    parser.add_argument("--dir", type=Path, help="where to put the journals (default: a temp dir)")
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="st-bench-"))
    base.mkdir(parents=True, exist_ok=True)

    inproc = asyncio.run(with_sequencer(base, "inproc", lambda mk: ack_latencies(mk, args.acks)))
    zmq_lat = asyncio.run(with_sequencer(base, "zmq", lambda mk: ack_latencies(mk, args.acks)))
    batched = asyncio.run(with_sequencer(base, "inproc", lambda mk: batched_rate(mk, 8, 10, 250)))
    batched_zmq = asyncio.run(with_sequencer(base, "zmq", lambda mk: batched_rate(mk, 8, 10, 250)))
    single = asyncio.run(with_sequencer(base, "inproc", lambda mk: one_by_one_rate(mk, 64, 200)))
    raw = raw_journal_rate(base / "raw.log", 200, 1000)
    print(f"ack latency, in-process client: p50 {pct(inproc, 0.5) * 1e3:.3f} ms  p99 {pct(inproc, 0.99) * 1e3:.3f} ms")
    print(
        f"ack latency, zmq ipc client:    p50 {pct(zmq_lat, 0.5) * 1e3:.3f} ms  p99 {pct(zmq_lat, 0.99) * 1e3:.3f} ms"
    )
    print(
        f"through the sequencer, 8 producers proposing bursts of 250: {batched:,.0f} events/s in-process, "
        f"{batched_zmq:,.0f} events/s over zmq ipc"
    )
    print(f"through the sequencer, 64 producers waiting for each ack:   {single:,.0f} events/s")
    print(f"raw journal, groups of 1000 with one fsync:   {raw:,.0f} events/s")

    log_path = base / "replay.log"
    build_s = write_log(log_path, args.events)
    journal = FileJournal.open_readonly(log_path)
    t0 = time.perf_counter()
    state = history.load(journal)
    replay_s = time.perf_counter() - t0
    journal.close()
    assert state.last_seq == args.events, state.last_seq
    size_mb = log_path.stat().st_size / 1e6
    per_event_us = replay_s / args.events * 1e6
    print(
        f"replay of {args.events:,} events: {replay_s:.2f} s ({per_event_us:.2f} us/event; "
        f"log of {size_mb:.0f} MB built in {build_s:.1f} s)"
    )

    yaml_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        projection.write_atomic(base / "tuner_state.yaml", projection.render(state))
        yaml_times.append(time.perf_counter() - t0)
    yaml_s = statistics.median(yaml_times)
    size_kb = (base / "tuner_state.yaml").stat().st_size / 1e3
    segments = len(state.tuning.segments)
    print(f"tuner_state.yaml ({segments} segments, {size_kb:.0f} kB): render + atomic write {yaml_s:.3f} s")
    print(
        f"RESULT replay_1m_s={replay_s * 1e6 / args.events:.3f} ack_p50_ms={pct(inproc, 0.5) * 1e3:.3f} "
        f"ack_p99_ms={pct(inproc, 0.99) * 1e3:.3f} batched_per_s={batched:.0f} yaml_write_s={yaml_s:.3f} "
        f"zmq_ack_p50_ms={pct(zmq_lat, 0.5) * 1e3:.3f} zmq_batched_per_s={batched_zmq:.0f} "
        f"one_by_one_per_s={single:.0f} raw_journal_per_s={raw:.0f}"
    )


if __name__ == "__main__":
    main()
