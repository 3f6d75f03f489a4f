"""Fuzz a live coordinator's proposal socket with 100k+ random and mutated inputs.

A real `run_tuner.py run` process (strategy none) listens on its ipc ROUTER; the
test talks to it with a raw DEALER: random bytes, mutated valid envelopes
(flips, truncations, insertions, splices), valid msgpack of the wrong shape,
and wrong framing. The coordinator must answer every well-framed message, keep
running, commit a valid proposal afterwards, and account for every refusal in
the log (ProtocolViolation counts).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import zmq
import zmq.asyncio

from smart_tuner.actors.bus import Ack
from smart_tuner.actors.bus.zmqbus import BusEndpoints
from smart_tuner.protocol import Envelope, encode
from smart_tuner.protocol import messages as m
from smart_tuner.state import history
from smart_tuner.state.journal import FileJournal, writer_active

ROOT = Path(__file__).resolve().parents[2]
N_INPUTS = 100_000
WINDOW = 500  # in flight before we read acks back: well under the sockets' HWM


def _valid_payloads() -> list[bytes]:
    msgs: list[m.Message] = [
        m.AlertSent(channel="fuzz", severity="info", title="t", dedup_key="k", ok=True),
        m.MetricsObserved(segment_id="s", source="worker", step=3, metrics={"loss": 1.5, "lr": 1e-3}),
        m.TrialProposed(trial_id="t", number=0, hparams={"lr": 0.1}, sampler="fuzz", reason="r", evidence={}),
        m.GuardTripped(guard="nan", segment_id=None, step=1, action="rollback", reason="x", evidence={"a": [1, 2]}),
    ]
    return [encode(Envelope.new(msg, actor="fuzz")) for msg in msgs]


def _random_msgpack(rng: random.Random, depth: int = 0) -> object:
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return rng.randint(-(2**63), 2**64 - 1)
    if pick == 1:
        return rng.random() * 10 ** rng.randint(-5, 5)
    if pick == 2:
        return "".join(rng.choice("abcXYZ_ \u00e9\u4e2d") for _ in range(rng.randrange(12)))
    if pick == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
    if pick == 4:
        return rng.choice([None, True, False])
    if pick == 5:
        return rng.choice(["RunStarted", "AlertSent", "Shutdown", "MetricsObserved", "Nope"])
    if pick == 6:
        return [_random_msgpack(rng, depth + 1) for _ in range(rng.randrange(12))]
    if pick == 7:
        keys = [str(_random_msgpack(rng, depth + 1))[:8] for _ in range(rng.randrange(5))]
        return {k: _random_msgpack(rng, depth + 1) for k in keys}
    return msgpack.ExtType(rng.randrange(128), b"x")


def _mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            del data[rng.randrange(len(data)) :]
        elif op == 2:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif op == 3 and data:
            data[rng.randrange(len(data))] = rng.choice([0xC1, 0xDC, 0xDD, 0xDE, 0xDF, 0xC7, 0xD4, 0x00, 0xFF])
        else:
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.choice(_valid_payloads())[: rng.randrange(40)]
    return bytes(data)


def _inputs(rng: random.Random) -> list[list[bytes]]:
    """Payloads (one frame, sent after a request id) and, now and then, badly framed messages.

    The valid samples are harmless events: a mutation that stays valid is simply committed.
    """
    valid = _valid_payloads()
    out: list[list[bytes]] = []
    for i in range(N_INPUTS):
        kind = i % 10
        if kind < 4:
            out.append([_mutate(rng, rng.choice(valid))])
        elif kind < 6:
            out.append([bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))])
        elif kind < 8:
            try:
                out.append([msgpack.packb(_random_msgpack(rng), use_bin_type=True)])
            except (OverflowError, ValueError, TypeError):
                out.append([b"\xc1"])
        elif kind == 8:
            out.append(rng.choice([[], [b"", b"", b""]]))  # no request id, or extra frames
        else:
            frame = list(rng.choice([[1], [1, 2, 3], [None] * 10, ["x"] * 10]))
            out.append([msgpack.packb(frame)])
    return out


def test_fuzzed_proposals_never_break_the_coordinator(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "20261123")))
    inputs = _inputs(rng)
    (tmp_path / "none.yaml").write_text("strategy: none\n")
    run_dir = tmp_path / "runs" / "fuzz"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run_tuner.py"),
            "run",
            "--config",
            "none.yaml",
            "--run-dir",
            str(run_dir),
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ((run_dir / "bus" / "endpoints.json").exists() and writer_active(run_dir / "events.log")):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "coordinator did not come up"
            time.sleep(0.05)
        endpoints = BusEndpoints.read(run_dir / "bus")
        answered, refused, framing = asyncio.run(_fuzz(endpoints.propose, inputs))
        assert proc.poll() is None, "the coordinator died under fuzzing"
        # It still does its job: a valid proposal is committed...
        seq = asyncio.run(_propose_valid(endpoints.propose))
        assert seq > 0
        # ...and it stops gracefully, accounting for every refusal.
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    journal = FileJournal.open_readonly(run_dir / "events.log")
    events = list(history.events(journal))
    journal.close()
    reported = sum(e.data.count for e in events if isinstance(e.data, m.ProtocolViolation))
    well_framed = sum(1 for frames in inputs if len(frames) == 1)
    assert answered == well_framed  # every well-framed message got an ack, ok or not
    assert refused > 0.8 * well_framed  # almost everything is garbage...
    assert reported == refused  # ...and every refusal is on record, exactly
    finished = [e.data for e in events if isinstance(e.data, m.RunFinished)]
    assert [f.status for f in finished] == ["stopped"]
    assert framing > 0


async def _fuzz(endpoint: str, inputs: list[list[bytes]]) -> tuple[int, int, int]:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    answered = refused = framing = 0
    try:
        for start in range(0, len(inputs), WINDOW):
            window = inputs[start : start + WINDOW]
            expected = 0
            for frames in window:
                if len(frames) == 1:
                    await sock.send_multipart([os.urandom(8), frames[0]])
                    expected += 1
                else:
                    await sock.send_multipart(frames or [b""])
            got = 0
            async with asyncio.timeout(60):
                while got < expected:
                    reply = await sock.recv_multipart()
                    ack = Ack.unpack(reply[-1])
                    if ack.error == "bad framing":
                        framing += 1
                        continue
                    got += 1
                    if not ack.ok and not ack.error.startswith("invalid transition"):
                        refused += 1  # malformed; a well-formed event the state refused is not a violation
            answered += got
    finally:
        sock.close()
        ctx.term()
    return answered, refused, framing


async def _propose_valid(endpoint: str) -> int:
    from smart_tuner.actors.bus.zmqbus import SocketOptions, ZmqClient, new_context

    ctx = new_context()
    client = ZmqClient(ctx, BusEndpoints(endpoint, endpoint, endpoint), SocketOptions(linger_ms=0), subscribe=False)
    try:
        msg = m.AlertSent(channel="fuzz", severity="info", title="after", dedup_key="after", ok=True)
        return await client.propose(Envelope.new(msg, actor="fuzz"), timeout_s=30)
    finally:
        await client.aclose()
        ctx.term()
