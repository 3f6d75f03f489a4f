"""Dashboard benchmark: the first screen of a 1 M-event run, and what 20 live browsers cost the run.

    python bench/dashboard.py [--events 1000000] [--clients 20] [--windows 4] [--dir DIR]

* **First screen**: a run directory holding a 1 M-event log (a tuning run's shape: a metric
  event per step, a trial and a segment every 200 steps, so 5000 segments) and the snapshot a
  run keeps (every 10 000 events: here 5 000 events before the head, with the log offset after
  it, as the sequencer writes it). Timed: a fresh dashboard
  application starting (latest snapshot plus the log after it), then answering its first
  ``GET /api/state`` (overview, the whole lineage, curves, trials, health) over a real socket,
  and the same again for ``/api/lineage``. Python's imports are not included.
* **Live cost**: a real sequencer (fsync on, 8 producers proposing bursts of 250 metric events
  through the in-process bus) commits to a run directory that a dashboard process follows;
  windows with 0 and with ``--clients`` SSE clients attached (another process reading every
  event) alternate, side by side, and the ratio of the sequencer's committed events/s is
  reported (median of the windows each way). The dashboard runs as ``run_tuner.py dashboard``
  does, at its default niceness of 10; the clients' process at ``--clients-nice`` (19: they stand
  in for browsers on another machine, whose parsing is not the training box's). The SSE
  clients are checked to have received every event of their windows; like a browser they
  reconnect with ``Last-Event-ID`` if a stream ends.

Ends with ``RESULT first_screen_1m_s=… lineage_1m_s=… sse20_rate_ratio=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eventlog import metric, started, write_log

from smart_tuner.actors.bus import BusClient, InprocHub
from smart_tuner.actors.dashboard.live import LiveRun
from smart_tuner.actors.dashboard.security import Access
from smart_tuner.actors.dashboard.server import make_app
from smart_tuner.actors.sequencer import Sequencer, SequencerSettings
from smart_tuner.protocol import Envelope
from smart_tuner.state import history
from smart_tuner.state.journal import FileJournal
from smart_tuner.state.model import TunerState
from smart_tuner.state.snapshot import write_snapshot

TOKEN = "bench-token"


def make_run(directory: Path, n: int) -> Path:
    run = directory / "run-1m"
    (run / "snapshots").mkdir(parents=True)
    took = write_log(run / "events.log", n)
    journal = FileJournal.open_readonly(run / "events.log")
    try:
        state = history.load(journal, until=max(1, n - 5000))
        offset = journal.offset_of(state.last_seq + 1)  # as the sequencer records it beside a snapshot
    finally:
        journal.close()
    write_snapshot(run / "snapshots", state, offset)
    print(f"wrote a {n}-event log in {took:.1f} s and a snapshot at seq {state.last_seq}", flush=True)
    return run


async def first_screen(run: Path) -> tuple[float, float, int]:
    """Seconds from a fresh app to its first /api/state, then to /api/lineage; the state's size."""
    t0 = time.perf_counter()
    app = make_app(LiveRun(run), Access.build(TOKEN, "127.0.0.1"))
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(server.make_url("/api/state"), headers=headers) as response:
            body = await response.read()
            assert response.status == 200, body[:200]
        state_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        async with session.get(server.make_url("/api/lineage"), headers=headers) as response:
            await response.read()
        lineage_s = time.perf_counter() - t1
    nodes = len(json.loads(body)["lineage"]["nodes"])
    return state_s, lineage_s, nodes


CLIENTS = """
import asyncio, os, sys, aiohttp
url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.nice(int(sys.argv[4]))
reconnects = 0
async def one(session, counts, i):
    # as a browser's EventSource does: when the stream ends, reconnect with the last id seen
    global reconnects
    while True:
        headers = {"Authorization": "Bearer " + token}
        if counts[i]:
            headers["Last-Event-ID"] = str(counts[i])
        try:
            async with session.get(url, headers=headers) as r:
                async for line in r.content:
                    if line.startswith(b"id: "):
                        counts[i] = int(line[4:])
        except aiohttp.ClientError:
            pass
        reconnects += 1
        await asyncio.sleep(0.2)
async def main():
    counts = [0] * n
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as s:
        tasks = [asyncio.create_task(one(s, counts, i)) for i in range(n)]
        while True:
            await asyncio.sleep(0.5)
            print(min(counts), reconnects, flush=True)
asyncio.run(main())
"""


async def live_cost(
    directory: Path, n_clients: int, windows: int, per_window: int, clients_nice: int
) -> tuple[float, list[str]]:
    run = directory / "run-live"
    (run / "snapshots").mkdir(parents=True)
    journal = FileJournal.open(run / "events.log")
    hub = InprocHub()
    sequencer = Sequencer(journal, hub.sequencer_port(), TunerState(), SequencerSettings(state_write_interval_s=3600))
    task = asyncio.create_task(sequencer.run())
    await sequencer.ready.wait()
    client = hub.client("bench", subscribe=False)
    await client.propose(Envelope.new(started(), actor="bench"))
    entry = "import sys; from smart_tuner.actors.cli.main import main; sys.exit(main())"
    dashboard = subprocess.Popen(  # noqa: ASYNC220 - once, before anything is timed
        [sys.executable, "-c", entry, "dashboard", str(run), "--port", "0", "--token", TOKEN],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert dashboard.stdout is not None
    url = re.search(r"(http://127\.0\.0\.1:\d+/)", dashboard.stdout.readline()).group(1)  # type: ignore[union-attr]
    notes: list[str] = []
    rates: dict[bool, list[float]] = {False: [], True: []}
    step = 0

    async def window() -> float:
        nonlocal step
        producers = [hub.client(f"p{k}", subscribe=False) for k in range(8)]
        bursts = per_window // (8 * 250)

        async def produce(c: BusClient, k: int) -> None:
            for b in range(bursts):
                base = step + (k * bursts + b) * 250
                await c.propose_many([Envelope.new(metric(base + i), actor="bench") for i in range(250)])

        t0 = time.perf_counter()
        await asyncio.gather(*(produce(c, k) for k, c in enumerate(producers)))
        rate = 8 * bursts * 250 / (time.perf_counter() - t0)
        step += 8 * bursts * 250
        for c in producers:
            await c.aclose()
        return rate

    try:
        await window()  # warm-up: the dashboard catches up with a log that is already moving
        for w in range(2 * windows):
            attached = w % 2 == 1
            readers = None
            if attached:
                readers = subprocess.Popen(  # noqa: ASYNC220 - between windows, not timed
                    [
                        sys.executable,
                        "-c",
                        CLIENTS,
                        url + "events?after=" + str(journal.last_seq),
                        TOKEN,
                        str(n_clients),
                        str(clients_nice),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert readers.stdout is not None
                readers.stdout.readline()  # connected and reading
                await asyncio.sleep(1.0)
            rate = await window()
            rates[attached].append(rate)
            if readers is not None:
                head = journal.last_seq
                deadline = time.monotonic() + 60
                seen = 0
                while time.monotonic() < deadline and seen < head:
                    line = await asyncio.to_thread(readers.stdout.readline)  # type: ignore[union-attr]
                    seen, reconnects = (int(x) for x in (line.split() or ["0", "0"]))
                notes.append(
                    f"window {w}: every one of {n_clients} clients read to #{seen} of #{head} "
                    f"({reconnects} reconnects, resumed by Last-Event-ID)"
                )
                if seen < head:
                    raise AssertionError(f"an SSE client stopped at #{seen} of #{head}")
                readers.kill()
                readers.wait()
            print(
                f"window {w}: {'with' if attached else 'without'} {n_clients} SSE clients: {rate:,.0f} events/s",
                flush=True,
            )
    finally:
        dashboard.kill()
        dashboard.wait()
        await client.aclose()
        sequencer.stop()
        await task
        journal.close()
    return statistics.median(rates[True]) / statistics.median(rates[False]), notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--windows", type=int, default=4, help="windows each way (with and without clients)")
    parser.add_argument("--per-window", type=int, default=40_000, help="events committed per window")
    parser.add_argument(
        "--clients-nice",
        type=int,
        default=19,
        help="the SSE clients' process niceness (default 19: they stand in for browsers, which run on the "
        "user's own machine, not on the training box; 0: as CPU-hungry as the sequencer)",
    )
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        run = make_run(directory, args.events)
        screens = [asyncio.run(first_screen(run)) for _ in range(3)]
        state_s = statistics.median(s[0] for s in screens)
        lineage_s = statistics.median(s[1] for s in screens)
        print(
            f"first screen of {args.events} events ({screens[0][2]} segments): /api/state {state_s:.2f} s "
            f"(runs: {', '.join(f'{s[0]:.2f}' for s in screens)}), then /api/lineage {lineage_s:.2f} s",
            flush=True,
        )
        ratio, notes = asyncio.run(live_cost(directory, args.clients, args.windows, args.per_window, args.clients_nice))
        for note in notes:
            print(note)
        print(f"sequencer rate with {args.clients} SSE clients / without: {ratio:.3f}")
    print(
        f"RESULT first_screen_1m_s={state_s:.2f} lineage_1m_s={lineage_s:.2f} sse{args.clients}_rate_ratio={ratio:.3f}"
    )


if __name__ == "__main__":
    main()
