"""The journal: one contract for every backend, then what only the file journal does
(recovery of torn tails, refusal of mid-file damage, locking, followers, the sparse index)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smart_tuner.state.journal import (
    FRAME,
    INDEX_EVERY,
    MAGIC,
    MAX_RECORD_BYTES,
    FileJournal,
    Journal,
    JournalCorrupt,
    JournalError,
    JournalFollower,
    JournalLocked,
    MemoryJournal,
    frame,
    writer_active,
)


def record(seq: int, size: int | None = None) -> bytes:
    """A recognisable payload for ``seq`` (sizes vary so that frames do not line up)."""
    body = f"record {seq}|".encode()
    n = size if size is not None else 20 + (seq * 7) % 40
    return (body * (n // len(body) + 1))[:n]


class Backend:
    """Opens the journal under test; ``reopen`` is a no-op for memory."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.opened: list[Journal] = []

    def open(self) -> Journal:
        j: Journal = MemoryJournal() if self.kind == "memory" else FileJournal.open(self.path)
        self.opened.append(j)
        return j

    def reopen(self, j: Journal) -> Journal:
        if self.kind == "memory":
            return j
        j.close()
        return self.open()


@pytest.fixture(params=["memory", "file"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path / "events.log")
    yield b
    for j in b.opened:
        j.close()


# --- the contract ---------------------------------------------------------------------------------


def test_a_new_journal_is_empty(backend: Backend) -> None:
    j = backend.open()
    assert j.last_seq == 0
    assert list(j.read()) == []


def test_append_assigns_gapless_seqs_and_reads_back(backend: Backend) -> None:
    j = backend.open()
    assert j.append([record(1)]) == 1
    assert j.append([record(2), record(3), record(4)]) == 4
    assert j.last_seq == 4
    assert list(j.read()) == [(s, record(s)) for s in range(1, 5)]


def test_an_empty_group_changes_nothing(backend: Backend) -> None:
    j = backend.open()
    j.append([record(1)])
    assert j.append([]) == 1
    assert list(j.read()) == [(1, record(1))]


def test_read_ranges(backend: Backend) -> None:
    j = backend.open()
    n = 9
    j.append([record(s) for s in range(1, 5)])
    j.append([record(s) for s in range(5, n + 1)])
    for from_seq in range(-1, n + 3):
        for to_seq in [None, *range(-1, n + 3)]:
            hi = n if to_seq is None else min(to_seq, n)
            expected = [(s, record(s)) for s in range(max(from_seq, 1), hi + 1)]
            assert list(j.read(from_seq, to_seq)) == expected, (from_seq, to_seq)


def test_records_outside_the_size_limits_are_refused_whole_group(backend: Backend) -> None:
    j = backend.open()
    j.append([record(1)])
    with pytest.raises(JournalError, match=r"record of 0 bytes is outside 1\.\."):
        j.append([record(2), b""])
    with pytest.raises(JournalError, match=f"record of {MAX_RECORD_BYTES + 1} bytes"):
        j.append([b"x" * (MAX_RECORD_BYTES + 1)])
    assert j.last_seq == 1
    assert j.append([record(2)]) == 2  # the refused groups left no trace
    j = backend.reopen(j)
    assert list(j.read()) == [(1, record(1)), (2, record(2))]


def test_the_largest_record_is_accepted(backend: Backend) -> None:
    j = backend.open()
    big = bytes(range(256)) * (MAX_RECORD_BYTES // 256)
    assert len(big) == MAX_RECORD_BYTES
    j.append([record(1), big, record(3)])
    j = backend.reopen(j)
    assert list(j.read(2, 3)) == [(2, big), (3, record(3))]


def test_buffers_are_copied_and_read_back_as_bytes(backend: Backend) -> None:
    j = backend.open()
    buf = bytearray(record(1))
    j.append([buf, memoryview(record(2))])
    buf[:] = b"overwritten after append"
    assert list(j.read()) == [(1, record(1)), (2, record(2))]
    assert all(type(p) is bytes for _, p in j.read())


# --- the file journal: reopening and recovery ---------------------------------------------------------


def _write_records(path: Path, n: int) -> list[int]:
    """A journal at ``path`` with records 1..n; returns each record's byte offset (index 0 is seq 1)."""
    with FileJournal.open(path) as j:
        j.append([record(s) for s in range(1, n + 1)])
    offsets, pos = [], len(MAGIC)
    for s in range(1, n + 1):
        offsets.append(pos)
        pos += FRAME.size + len(record(s))
    assert path.stat().st_size == pos
    return offsets


def _assert_records(j: FileJournal, n: int) -> None:
    assert j.last_seq == n
    assert list(j.read()) == [(s, record(s)) for s in range(1, n + 1)]


def test_records_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    j = FileJournal.open(path)
    assert j.recovery.created
    j.append([record(1), record(2)])
    j.close()
    with FileJournal.open(path) as j:
        assert not j.recovery.created
        assert (j.recovery.last_seq, j.recovery.truncated_bytes) == (2, 0)
        _assert_records(j, 2)
        assert j.append([record(3)]) == 3
    with FileJournal.open(path) as j:
        _assert_records(j, 3)


def test_create_false_refuses_a_missing_journal(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal here"):
        FileJournal.open(tmp_path / "missing.log", create=False)
    assert not (tmp_path / "missing.log").exists()


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    j = FileJournal.open(tmp_path / "events.log")
    j.close()
    j.close()  # idempotent
    with pytest.raises(JournalError, match="journal is closed"):
        j.append([record(1)])


def test_a_torn_tail_is_truncated_at_every_cut_point(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    n = 5
    _write_records(path, n)
    whole = path.read_bytes()
    last_frame = FRAME.size + len(record(n))
    for keep in range(last_frame):  # bytes of the last frame that reached the disk
        path.write_bytes(whole[: len(whole) - last_frame + keep])
        with FileJournal.open(path) as j:
            assert j.recovery.truncated_bytes == keep, keep
            _assert_records(j, n - 1)
        assert path.stat().st_size == len(whole) - last_frame


def test_appending_after_recovery_continues_the_sequence(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    _write_records(path, 4)
    with open(path, "ab") as fh:
        fh.write(frame(record(5))[:11])
    with FileJournal.open(path) as j:
        assert j.recovery.truncated_bytes == 11
        assert j.append([record(5), record(6)]) == 6
    with FileJournal.open(path) as j:
        assert j.recovery.truncated_bytes == 0
        _assert_records(j, 6)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00",
        b"\x00" * 40,  # zeroed blocks: a length of 0
        b"\xff" * 9,  # a length beyond MAX_RECORD_BYTES
        FRAME.pack(30, 12345) + b"y" * 30,  # a whole frame with a bad CRC
        FRAME.pack(300, 0) + b"z" * 50,  # a header promising more bytes than there are
    ],
    ids=["one-zero", "zeros", "huge-length", "bad-crc", "short"],
)
def test_garbage_after_the_last_record_is_a_torn_tail(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "events.log"
    _write_records(path, 3)
    with open(path, "ab") as fh:
        fh.write(garbage)
    with FileJournal.open(path) as j:
        assert j.recovery.truncated_bytes == len(garbage)
        _assert_records(j, 3)


def test_a_flipped_byte_in_a_middle_record_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    n, bad = 6, 3
    offsets = _write_records(path, n)
    whole = path.read_bytes()
    start, end = offsets[bad - 1], offsets[bad]
    for pos in range(start, end):  # every byte of the frame: length, CRC and payload
        damaged = bytearray(whole)
        damaged[pos] ^= 0xFF
        path.write_bytes(damaged)
        with pytest.raises(JournalCorrupt) as info:
            FileJournal.open(path)
        err = info.value
        assert f"corrupt record at byte {start}" in str(err), pos
        assert "salvage" in str(err)
        assert (err.offset, err.last_good_seq, err.next_valid_offset) == (start, bad - 1, end), pos
        assert path.read_bytes() == bytes(damaged)  # refusing to open leaves the evidence alone
        assert not writer_active(path)  # and releases the lock


def test_a_flipped_byte_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    n = 4
    offsets = _write_records(path, n)
    whole = path.read_bytes()
    for pos in range(offsets[-1], len(whole)):
        damaged = bytearray(whole)
        damaged[pos] ^= 0xFF
        path.write_bytes(damaged)
        with FileJournal.open(path) as j:
            assert j.recovery.truncated_bytes == len(whole) - offsets[-1], pos
            _assert_records(j, n - 1)


def test_an_empty_file_and_a_torn_magic_open_as_empty_journals(tmp_path: Path) -> None:
    for head in (b"", MAGIC[:1], MAGIC[:7]):
        path = tmp_path / f"torn-{len(head)}.log"
        path.write_bytes(head)
        with FileJournal.open(path) as j:
            assert j.last_seq == 0
            assert j.append([record(1)]) == 1
        assert path.read_bytes() == MAGIC + frame(record(1))


@pytest.mark.parametrize("head", [b"NOTAJRNL" + frame(b"x"), b"SMTX", b"{}\n"], ids=["other", "short", "json"])
def test_bad_magic_is_refused(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "events.log"
    path.write_bytes(head)
    with pytest.raises(JournalError, match="not a Smart Tuner journal"):
        FileJournal.open(path)
    with pytest.raises(JournalError, match="bad magic"):
        JournalFollower(path)
    assert path.read_bytes() == head


# --- the file journal: one writer ----------------------------------------------------------------------


def test_a_second_writer_is_locked_out(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    with FileJournal.open(path) as first:
        first.append([record(1)])
        with pytest.raises(JournalLocked, match="another process holds this journal"):
            FileJournal.open(path)
        assert first.append([record(2)]) == 2  # the refused open did not disturb the writer
    with FileJournal.open(path) as second:  # the lock goes with close
        _assert_records(second, 2)


def test_writer_active(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    assert not writer_active(path)  # no file
    j = FileJournal.open(path)
    assert writer_active(path)
    j.close()
    assert path.exists()
    assert not writer_active(path)


# --- followers ------------------------------------------------------------------------------------------


def test_a_follower_reads_what_is_appended_after_it_started(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    with FileJournal.open(path) as j:
        j.append([record(1), record(2)])
        follower = JournalFollower(path)
        try:
            assert follower.poll() == [(1, record(1)), (2, record(2))]
            assert follower.poll() == []
            j.append([record(3)])
            j.append([record(4), record(5)])
            assert follower.poll(max_records=2) == [(3, record(3)), (4, record(4))]
            assert follower.poll() == [(5, record(5))]
            assert follower.next_seq == 6
        finally:
            follower.close()
        assert writer_active(path)  # a follower never takes the writer's lock


def test_a_follower_can_start_later_in_the_log(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    _write_records(path, 6)
    follower = JournalFollower(path, from_seq=4)
    try:
        assert follower.poll() == [(s, record(s)) for s in (4, 5, 6)]
        follower.seek(2)
        assert follower.poll(max_records=1) == [(2, record(2))]
    finally:
        follower.close()


def test_a_follower_waits_at_an_incomplete_record(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    _write_records(path, 2)
    pending = frame(record(3))
    follower = JournalFollower(path)
    try:
        assert [s for s, _ in follower.poll()] == [1, 2]
        # The writer is mid-append: the frame lands in pieces, and until the last one the record is not there.
        written = 0
        with open(path, "ab") as fh:
            for cut in (3, FRAME.size, FRAME.size + 5, len(pending)):
                fh.write(pending[written:cut])
                fh.flush()
                written = cut
                if cut < len(pending):
                    assert follower.poll() == [], cut
                    assert follower.poll(final=True) == [], cut  # an incomplete tail is not damage
                else:
                    assert follower.poll() == [(3, record(3))]
        assert follower.next_seq == 4
    finally:
        follower.close()


def test_a_final_poll_reports_damage_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    offsets = _write_records(path, 5)
    damaged = bytearray(path.read_bytes())
    damaged[offsets[2] + FRAME.size + 2] ^= 0x01  # payload of record 3
    path.write_bytes(damaged)
    follower = JournalFollower(path)
    try:
        assert follower.poll() == [(1, record(1)), (2, record(2))]  # stops before the damage, no error
        assert follower.poll() == []
        with pytest.raises(JournalCorrupt, match=f"corrupt record at byte {offsets[2]}") as info:
            follower.poll(final=True)
        assert info.value.last_good_seq == 2
        assert info.value.next_valid_offset == offsets[3]
    finally:
        follower.close()


def test_a_final_poll_reports_a_length_pointing_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    offsets = _write_records(path, 5)
    damaged = bytearray(path.read_bytes())
    damaged[offsets[2] + 1] ^= 0x10  # record 3's length now claims 4 KiB more than the file holds
    path.write_bytes(damaged)
    follower = JournalFollower(path)
    try:
        assert [s for s, _ in follower.poll()] == [1, 2]
        with pytest.raises(JournalCorrupt, match=f"byte {offsets[2]}"):
            follower.poll(final=True)
    finally:
        follower.close()


# --- the sparse index ----------------------------------------------------------------------------------

N_INDEXED = 2 * INDEX_EVERY + 37


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FileJournal, FileJournal]]:
    """The same log twice: one journal that built its index while appending, one that rebuilt it on open."""
    path = tmp_path_factory.mktemp("indexed") / "events.log"
    appended = FileJournal.open(path, fsync=False)
    seq = 0
    for size in (1, INDEX_EVERY - 2, 3, INDEX_EVERY - 5, 3):  # one group straddles a boundary, the next starts on one
        appended.append([record(s) for s in range(seq + 1, seq + size + 1)])
        seq += size
    appended.append([record(s) for s in range(seq + 1, N_INDEXED + 1)])
    assert appended.last_seq == N_INDEXED
    copy = path.with_name("copy.log")
    copy.write_bytes(path.read_bytes())
    reopened = FileJournal.open(copy, fsync=False)
    yield appended, reopened
    appended.close()
    reopened.close()


_edges = [1, 2, INDEX_EVERY - 1, INDEX_EVERY, INDEX_EVERY + 1, INDEX_EVERY + 2, 2 * INDEX_EVERY, 2 * INDEX_EVERY + 1]
_seqs = st.sampled_from([*_edges, N_INDEXED, N_INDEXED + 1]) | st.integers(-2, N_INDEXED + 3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(from_seq=_seqs, to_seq=st.none() | _seqs)
def test_reads_across_index_boundaries(
    indexed: tuple[FileJournal, FileJournal], from_seq: int, to_seq: int | None
) -> None:
    hi = N_INDEXED if to_seq is None else min(to_seq, N_INDEXED)
    expected = [(s, record(s)) for s in range(max(from_seq, 1), hi + 1)]
    for j in indexed:
        assert list(j.read(from_seq, to_seq)) == expected


def test_a_follower_seeks_across_index_boundaries(indexed: tuple[FileJournal, FileJournal]) -> None:
    follower = JournalFollower(indexed[0].path)
    try:
        assert len(follower.poll()) == N_INDEXED
        for seq in (INDEX_EVERY + 1, 3, 2 * INDEX_EVERY + 5, INDEX_EVERY, N_INDEXED, 1, 2 * INDEX_EVERY + 1):
            follower.seek(seq)
            assert follower.poll(max_records=2) == [(s, record(s)) for s in range(seq, min(seq + 2, N_INDEXED + 1))]
        follower.seek(N_INDEXED - 1)
        assert [s for s, _ in follower.poll()] == [N_INDEXED - 1, N_INDEXED]
    finally:
        follower.close()


def test_reads_of_records_larger_than_the_scan_buffer_boundaries(tmp_path: Path) -> None:
    # ~0.7 MiB records: the 4 MiB scan chunks end in the middle of frames.
    path = tmp_path / "events.log"
    sizes = [700_001 + 13 * s for s in range(1, 10)]
    with FileJournal.open(path, fsync=False) as j:
        j.append([record(s, size) for s, size in enumerate(sizes, start=1)])
    with FileJournal.open(path, fsync=False) as j:
        assert j.last_seq == len(sizes)
        assert list(j.read(6, 8)) == [(s, record(s, sizes[s - 1])) for s in (6, 7, 8)]
        assert [zlib.crc32(p) for _, p in j.read()] == [zlib.crc32(record(s, n)) for s, n in enumerate(sizes, 1)]


def test_the_file_layout_is_magic_then_crc_frames(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    with FileJournal.open(path) as j:
        j.append([b"abc", b"de"])
    raw = path.read_bytes()
    assert raw[: len(MAGIC)] == MAGIC
    length, crc = FRAME.unpack_from(raw, len(MAGIC))
    assert (length, crc) == (3, zlib.crc32(b"abc"))
    assert raw[len(MAGIC) + FRAME.size :] == b"abc" + frame(b"de")
    assert os.path.getsize(path) == len(MAGIC) + 2 * FRAME.size + 5


def test_a_follower_resumes_where_a_reader_stopped_and_seeks_back_by_the_index(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    writer = FileJournal.open(path, fsync=False)
    writer.append([f"r{i}".encode() for i in range(1, 2501)])
    reader = FileJournal.open_readonly(path)
    position = reader.position()
    reader.close()
    assert position[0] == 2501 and position[1] == path.stat().st_size and position[2]
    writer.append([b"new-1", b"new-2"])
    follower = JournalFollower.resume(path, position)
    assert follower.poll() == [(2501, b"new-1"), (2502, b"new-2")]  # only what came after
    follower.seek(2000)
    assert follower.poll(2) == [(2000, b"r2000"), (2001, b"r2001")]
    follower.seek(1)
    assert follower.poll(1) == [(1, b"r1")]
    follower.close()
    writer.close()
