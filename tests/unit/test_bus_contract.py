"""One contract, two buses: the in-process hub and ZeroMQ over ipc sockets.

Each case runs a real sequencer on a real journal file and asserts on what is
committed and what subscribers receive. No sleeps: everything waits on acks
or on the events themselves.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from smart_tuner.actors.bus import BusClient, ProposalRejected, StreamStats, committed_events
from smart_tuner.protocol import Envelope, encode
from smart_tuner.protocol import messages as m
from smart_tuner.state import history
from smart_tuner.state.journal import FileJournal
from tests.unit.busharness import KINDS, alert, harness, propose, run_started


async def collect(client: BusClient, journal: object, n: int, stats: StreamStats | None = None) -> list[Envelope]:
    out: list[Envelope] = []
    async with asyncio.timeout(30):
        async for env in committed_events(client, journal, 1, poll_s=0.05, stats=stats):  # type: ignore[arg-type]
            out.append(env)
            if len(out) == n:
                return out
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_proposal_is_committed_acked_and_published(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(kind, tmp_path) as h:
            sub = h.client()
            prop = h.client()
            assert await propose(prop, run_started()) == 1
            assert await propose(prop, alert(1)) == 2
            got = await collect(sub, h.journal, 2)
            assert [e.seq for e in got] == [1, 2]
            assert isinstance(got[1].data, m.AlertSent) and got[1].data.title == "a1"
            assert h.journal.last_seq == 2
            assert [e.type for e in history.events(h.journal)] == ["RunStarted", "AlertSent"]

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_refusals_take_no_seq_and_name_the_problem(kind: str, tmp_path: Path) -> None:
    async def main() -> int:
        async with harness(kind, tmp_path) as h:
            c = h.client()
            with pytest.raises(ProposalRejected, match="before RunStarted"):
                await propose(c, alert(0))
            await propose(c, run_started())
            finished = m.SegmentFinished(
                segment_id="ghost", end_step=1, metrics={}, checkpoint="c", checkpoint_sha256="s", duration_s=1.0
            )
            with pytest.raises(ProposalRejected, match=r"ghost.*never scheduled"):
                await propose(c, finished)
            with pytest.raises(ProposalRejected, match="is a command"):
                await propose(c, m.Shutdown(reason="no"))
            ack = await c.propose_payload(b"\xc1 not msgpack", 10)
            assert not ack.ok and "malformed" in ack.error
            committed = Envelope.new(alert(1), actor="test").with_seq(7)
            ack = await c.propose_payload(encode(committed), 10)
            assert not ack.ok and "seq 0" in ack.error
            seq = await propose(c, alert(2))
            assert h.sequencer.violation_count == 3  # malformed input...
            assert h.sequencer.refused_transitions == 2  # ...is not the same as a transition the state refused
            return seq

    seq = asyncio.run(main())
    journal = FileJournal.open_readonly(tmp_path / "events.log")
    events = list(history.events(journal))
    journal.close()
    # Refused proposals took no seq; the refusals themselves are on record, counted exactly.
    assert [e.type for e in events if e.type != "ProtocolViolation"] == ["RunStarted", "AlertSent"]
    assert seq == next(e.seq for e in events if e.type == "AlertSent")
    assert sum(e.data.count for e in events if isinstance(e.data, m.ProtocolViolation)) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_retried_proposal_gets_its_first_seq(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(kind, tmp_path) as h:
            c = h.client()
            await propose(c, run_started())
            env = Envelope.new(alert(1), actor="test")
            first = await c.propose(env)
            again = await c.propose(env)
            assert first == again == 2
            twice = Envelope.new(alert(2), actor="test")
            acks = await c.propose_many([twice, twice])  # both copies in one group
            assert [(a.ok, a.seq) for a in acks] == [(True, 3), (True, 3)]
            assert h.journal.last_seq == 3

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_proposers_every_subscriber_sees_one_gapless_order(kind: str, tmp_path: Path) -> None:
    per_client = 150

    async def main() -> None:
        async with harness(kind, tmp_path) as h:
            subs = [h.client(), h.client()]
            await propose(h.client(), run_started())

            async def produce(k: int) -> list[int]:
                c = h.client()
                return [await propose(c, alert(f"{k}-{i}")) for i in range(per_client)]

            seqs = await asyncio.gather(*(produce(k) for k in range(3)))
            total = 1 + 3 * per_client
            for sub in subs:
                got = await collect(sub, h.journal, total)
                assert [e.seq for e in got] == list(range(1, total + 1))
                titles = [e.data.title for e in got[1:]]  # type: ignore[attr-defined]
                for k in range(3):  # each producer's events in the order it proposed them
                    mine = [t for t in titles if t.startswith(f"a{k}-")]
                    assert mine == [f"a{k}-{i}" for i in range(per_client)]
            for s in seqs:
                assert s == sorted(s)

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_slow_subscriber_loses_nothing(kind: str, tmp_path: Path) -> None:
    # A tiny queue (in-process) or HWM (ZeroMQ): the feed drops, the stream refills from the log.
    n = 400

    async def main() -> None:
        async with harness(kind, tmp_path, hwm=5, feed_queue=5) as h:
            sub = h.client()
            c = h.client()
            await propose(c, run_started())
            for i in range(n):
                await propose(c, alert(i))
            stats = StreamStats()
            got = await collect(sub, h.journal, n + 1, stats)
            assert [e.seq for e in got] == list(range(1, n + 2))
            assert stats.gap_filled > 0  # it really had to read from the log
            assert stats.delivered + stats.gap_filled == n + 1

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_records_on_the_feed_are_counted_and_skipped(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(kind, tmp_path) as h:
            sub = h.client()
            c = h.client()
            await propose(c, run_started())
            stats = StreamStats()
            stream = committed_events(sub, h.journal, 1, poll_s=0.05, stats=stats)  # type: ignore[arg-type]
            async with asyncio.timeout(30):
                first = await anext(stream)  # caught up from the log; now it reads the live feed
                await h.sequencer.port.publish(b"\x93garbage")  # a bad record on the live feed
                await propose(c, alert(1))
                second = await anext(stream)
            assert (first.seq, second.seq) == (1, 2)
            assert second.type == "AlertSent"
            if kind == "inproc":  # a ZeroMQ late joiner may miss the garbage; in-process always gets it
                assert stats.malformed == 1

    asyncio.run(main())


def test_ipc_socket_directory_is_private(tmp_path: Path) -> None:
    from smart_tuner.actors.bus.zmqbus import ipc_endpoints

    endpoints = ipc_endpoints(tmp_path / "bus")
    assert endpoints.propose.startswith(f"ipc://{(tmp_path / 'bus').resolve()}")
    assert stat.S_IMODE(os.stat(tmp_path / "bus").st_mode) == 0o700
    deep = tmp_path / ("x" * 60) / ("y" * 60) / "bus"
    long_eps = ipc_endpoints(deep)  # too long for sun_path: a private short directory instead
    sock_dir = Path(long_eps.propose[len("ipc://") :]).parent
    assert len(long_eps.propose) < 110
    assert stat.S_IMODE(os.stat(sock_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(deep).st_mode) == 0o700


@pytest.mark.parametrize("kind", KINDS)
def test_a_burst_is_acked_in_order_and_committed_in_few_groups(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(kind, tmp_path) as h:
            c = h.client(subscribe=False) if kind == "zmq" else h.client()
            await propose(c, run_started())
            groups_before = h.sequencer.groups_committed
            burst = [Envelope.new(alert(i), actor="test") for i in range(300)]
            ghost = m.SegmentStarted(segment_id="ghost", worker_id="w", device="cpu", pid=1)
            burst.insert(150, Envelope.new(ghost, actor="test"))  # refused, and the rest goes on
            acks = await c.propose_many(burst)
            assert [a.ok for a in acks] == [True] * 150 + [False] + [True] * 150
            assert "never scheduled" in acks[150].error
            seqs = [a.seq for a in acks if a.ok]
            assert seqs == list(range(2, 302))
            assert h.sequencer.groups_committed - groups_before < 50  # group commit: far fewer fsyncs than events
            titles = [e.data.title for e in history.events(h.journal, 2) if isinstance(e.data, m.AlertSent)]
            assert titles == [f"a{i}" for i in range(300)]

    asyncio.run(main())
