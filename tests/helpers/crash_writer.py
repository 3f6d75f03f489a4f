"""A journal writer for the crash test: appends until it is killed.

Called as ``python tests/helpers/crash_writer.py JOURNAL_PATH START_SEQ`` (or with
``-m tests.helpers.crash_writer`` from the repository root). It opens the
journal with fsync on, checks that the head is ``START_SEQ - 1`` (the parent's
view after recovery), then loops: append a group of 1-50 ``MetricsObserved``
events, and once ``append`` has returned, print the last acknowledged seq on a
line of its own and flush. Every payload is a function of its seq
(``payload_for``), so the parent can check the content of every record.

Imports the standard library and smart_tuner only.
"""

from __future__ import annotations

import random
import sys

from smart_tuner.protocol import Envelope, encode
from smart_tuner.protocol.messages import MetricsObserved
from smart_tuner.state.journal import FileJournal

MAX_GROUP = 50


def payload_for(seq: int) -> bytes:
    """The encoded event with ``seq``: the same bytes in the writer and in the test."""
    msg = MetricsObserved(
        segment_id=f"seg-{seq // 97}",
        source="crash_writer",
        step=seq * 10,
        metrics={"loss": 1.0 / seq, "seq": float(seq)},
    )
    env = Envelope(
        seq=seq,
        id=f"crash-{seq:012d}",
        ts=1_700_000_000.0 + seq,
        type=msg.TYPE,
        tv=msg.TV,
        actor="crash_writer",
        corr=None,
        cause=None,
        data=msg,
    )
    return encode(env)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: crash_writer.py JOURNAL_PATH START_SEQ\n")
        return 2
    path, start_seq = argv[0], int(argv[1])
    journal = FileJournal.open(path, fsync=True)
    if journal.last_seq != start_seq - 1:
        sys.stderr.write(f"journal head is {journal.last_seq}, expected {start_seq - 1}\n")
        return 3
    rng = random.Random(start_seq)  # group sizes differ between rounds, reproducibly
    while True:
        first = journal.last_seq + 1
        group = [payload_for(seq) for seq in range(first, first + rng.randint(1, MAX_GROUP))]
        acked = journal.append(group)
        sys.stdout.write(f"{acked}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
