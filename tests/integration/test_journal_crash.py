"""Crash test: a real writer process appends to one journal and is SIGKILLed, round after round.

After every kill the journal is reopened (recovery) and must hold every event
the writer acknowledged, each record intact, with the seq and bytes it was
written with. Some rounds also append a torn frame or garbage before reopening,
as a crash in the middle of a write would leave. Set ``CRASH_TEST_SEED`` to
replay a round plan; the kill moments themselves depend on the scheduler.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smart_tuner.protocol import decode
from smart_tuner.state.journal import FRAME, FileJournal, frame, writer_active
from tests.helpers.crash_writer import payload_for

WRITER = Path(__file__).resolve().parents[1] / "helpers" / "crash_writer.py"
REPO = Path(__file__).resolve().parents[2]
ROUNDS = 24
LINE_TIMEOUT_S = 60.0  # a deadline for a stuck writer, far above a normal start (well under a second)


class LineReader:
    """Reads the writer's stdout a line at a time, each read with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def line(self, timeout_s: float = LINE_TIMEOUT_S) -> str | None:
        """The next complete line, or None at end of file."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(left, 0.0))
            if not ready:
                raise AssertionError(f"the writer printed nothing for {timeout_s} s")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def rest(self) -> list[str]:
        """Every complete line left, once the writer is dead (a partial last line was never acknowledged)."""
        lines = []
        while (line := self.line()) is not None:
            lines.append(line)
        return lines


def _start_writer(path: Path, start_seq: int, stderr_path: Path) -> subprocess.Popen[bytes]:
    with open(stderr_path, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, str(WRITER), str(path), str(start_seq)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=REPO,
        )


def _garbage(rng: random.Random, next_seq: int) -> bytes:
    """What a crash mid-write can leave after the last whole record."""
    torn = frame(payload_for(next_seq))
    kinds = [
        torn[: rng.randrange(1, len(torn))],  # the next record, cut anywhere
        rng.randbytes(rng.randrange(1, FRAME.size)),  # part of a header
        FRAME.pack(rng.randrange(1, 4096), rng.getrandbits(32)) + rng.randbytes(rng.randrange(0, 64)),
        bytes(rng.randrange(1, 4096)),  # zeroed blocks
    ]
    return rng.choice(kinds)


def _check_journal(path: Path, expected: dict[int, bytes], seed: int) -> FileJournal:
    journal = FileJournal.open(path)
    for seq, payload in journal.read():
        if seq not in expected:
            expected[seq] = payload_for(seq)
        assert payload == expected[seq], f"seed={seed}: record {seq} holds other bytes"
    assert sum(1 for _ in journal.read()) == journal.last_seq
    return journal


@pytest.mark.slow
def test_no_acknowledged_event_is_lost_across_kills(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_TEST_SEED", random.SystemRandom().randrange(2**32)))
    print(f"crash test seed={seed} (set CRASH_TEST_SEED to reuse)")
    rng = random.Random(seed)
    path = tmp_path / "events.log"
    expected: dict[int, bytes] = {}
    head, lost, truncated_rounds = 0, 0, 0

    for round_no in range(ROUNDS):
        where = f"seed={seed} round={round_no}"
        stderr_path = tmp_path / f"writer-{round_no}.err"
        proc = _start_writer(path, head + 1, stderr_path)
        try:
            reader = LineReader(proc)
            first = reader.line()
            assert first is not None, f"{where}: writer exited early: {stderr_path.read_text()}"
            acked = [int(first)]
            for _ in range(rng.randint(0, 30)):
                line = reader.line()
                assert line is not None, f"{where}: writer exited early: {stderr_path.read_text()}"
                acked.append(int(line))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"{where}: {stderr_path.read_text()}"
        acked += [int(line) for line in reader.rest()]  # acknowledged before the kill, read after it
        assert acked == sorted(set(acked)) and acked[0] > head, f"{where}: acks out of order: {acked[:5]}..."
        assert not writer_active(path), f"{where}: the dead writer's lock is still held"

        garbage = b""
        if round_no % 3 == 2:
            garbage = _garbage(rng, acked[-1] + 1)
            with open(path, "ab") as fh:
                fh.write(garbage)

        journal = _check_journal(path, expected, seed)
        try:
            lost += max(0, acked[-1] - journal.last_seq)
            assert journal.last_seq >= acked[-1], f"{where}: acked {acked[-1]}, recovered {journal.last_seq}"
            assert journal.recovery.truncated_bytes >= len(garbage), where
            truncated_rounds += journal.recovery.truncated_bytes > 0
            for seq, payload in journal.read(head + 1):  # each new record decodes as the event written
                env = decode(payload)
                assert (env.seq, env.data.step) == (seq, seq * 10), where  # type: ignore[attr-defined]
            head = journal.last_seq
        finally:
            journal.close()

    assert lost == 0, f"seed={seed}: {lost} acknowledged events lost"
    assert head >= ROUNDS  # every round acknowledged at least one group
    assert truncated_rounds >= ROUNDS // 3  # the garbage rounds all exercised torn-tail recovery
    with FileJournal.open(path) as journal:  # and the final log is whole, in order, once more
        assert journal.recovery.truncated_bytes == 0
        assert [s for s, _ in journal.read()] == list(range(1, head + 1))
