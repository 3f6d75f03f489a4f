"""The append-only event log: CRC-framed records with a gapless sequence.

File layout: an 8-byte magic, then records ``[u32 length][u32 crc32][payload]``
(little endian). Record *k* (1-based) holds the event with ``seq == k``; the
journal sees bytes only and never decodes them (the codec checks ``seq`` when
it reads an event back).

* ``FileJournal.open`` takes an exclusive ``flock`` (one writer per log), then
  scans the file: a torn tail (crash mid-append) is truncated; a bad record
  followed by valid ones is corruption, and the journal refuses to open with
  the offset and a salvage hint.
* ``append`` writes a group of records with one ``write`` and one
  ``fdatasync``: when it returns, the records are durable.
* ``JournalFollower`` reads a log that another process is appending to and
  never truncates it (for ``tail`` and ``status``).
* ``MemoryJournal`` has the same interface, for unit tests.

Imports the standard library only.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"SMTJRNL1"
FRAME = struct.Struct("<II")
MAX_RECORD_BYTES = 1 << 20  # matches the codec's message limit
INDEX_EVERY = 1024  # one sparse index entry per this many records: reads from any seq seek, not scan
_CHUNK = 4 << 20  # read buffer for scans


class JournalError(Exception):
    """The journal cannot be used as asked."""


class JournalLocked(JournalError):
    pass


class JournalCorrupt(JournalError):
    def __init__(self, path: Path | str, offset: int, last_good_seq: int, next_valid_offset: int) -> None:
        self.path = str(path)
        self.offset = offset
        self.last_good_seq = last_good_seq
        self.next_valid_offset = next_valid_offset
        super().__init__(
            f"{path}: corrupt record at byte {offset} (after seq {last_good_seq}); valid records follow at byte "
            f"{next_valid_offset}, so this is damage, not a torn tail, and the journal will not open. "
            f"To salvage: `run_tuner.py salvage RUN_DIR` keeps a copy of the whole file and cuts the log after "
            f"seq {last_good_seq}; everything after that stays in the copy for inspection."
        )


class _BadFrame(Exception):
    def __init__(self, offset: int) -> None:
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``FileJournal.open`` found: the head seq and the bytes of torn tail it cut."""

    last_seq: int
    truncated_bytes: int
    created: bool


def frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _frames(fd: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, payload)`` for complete, valid frames in ``[start, end)``.

    Stops silently at an incomplete frame; raises ``_BadFrame`` at a frame whose
    length is impossible or whose CRC does not match.
    """
    buf = b""
    buf_at = start  # file offset of buf[0]
    pos = start
    while True:
        rel = pos - buf_at
        avail = len(buf) - rel
        if avail >= FRAME.size:
            length, crc = FRAME.unpack_from(buf, rel)
            if length == 0 or length > MAX_RECORD_BYTES:
                raise _BadFrame(pos)
            if avail >= FRAME.size + length:
                payload = buf[rel + FRAME.size : rel + FRAME.size + length]
                if zlib.crc32(payload) != crc:
                    raise _BadFrame(pos)
                yield pos, payload
                pos += FRAME.size + length
                continue
        # Not a whole frame in the buffer: read more (a chunk always holds a whole frame).
        want = min(_CHUNK, end - (buf_at + len(buf)))
        if want <= 0:
            return
        more = os.pread(fd, want, buf_at + len(buf))
        if not more:
            return
        buf = buf[rel:] + more
        buf_at = pos


def _next_valid_frame(fd: int, start: int, end: int) -> int | None:
    """Offset of the first valid frame after ``start`` (byte by byte), or None."""
    data = os.pread(fd, end - start, start)
    for rel in range(1, len(data) - FRAME.size):
        length, crc = FRAME.unpack_from(data, rel)
        fits = 0 < length <= MAX_RECORD_BYTES and rel + FRAME.size + length <= len(data)
        if fits and zlib.crc32(data[rel + FRAME.size : rel + FRAME.size + length]) == crc:
            return start + rel
    return None


class Journal(abc.ABC):
    """An append-only sequence of byte records; record k has seq k."""

    @property
    @abc.abstractmethod
    def last_seq(self) -> int: ...

    @abc.abstractmethod
    def append(self, payloads: Sequence[bytes]) -> int:
        """Append ``payloads`` durably; returns the new ``last_seq``."""

    @abc.abstractmethod
    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, payload)`` for committed records in ``[from_seq, to_seq]``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the default has none."""


class MemoryJournal(Journal):
    """A journal in memory, for unit tests (same contract, no durability)."""

    def __init__(self) -> None:
        self._records: list[bytes] = []

    @property
    def last_seq(self) -> int:
        return len(self._records)

    def append(self, payloads: Sequence[bytes]) -> int:
        for p in payloads:
            if not p or len(p) > MAX_RECORD_BYTES:
                raise JournalError(f"record of {len(p)} bytes is outside 1..{MAX_RECORD_BYTES}")
        self._records.extend(bytes(p) for p in payloads)
        return len(self._records)

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        stop = len(self._records) if to_seq is None else min(to_seq, len(self._records))
        for seq in range(max(from_seq, 1), stop + 1):
            yield seq, self._records[seq - 1]


class FileJournal(Journal):
    """The durable journal (one writer, many readers)."""

    def __init__(
        self, path: Path, fd: int, last_seq: int, size: int, index: list[int], fsync: bool, *, readonly: bool = False
    ) -> None:
        self.path = path
        self.readonly = readonly
        self._fd = fd
        self._last_seq = last_seq
        self._size = size
        self._index = index  # _index[i] = offset of record i*INDEX_EVERY + 1
        self._fsync = fsync
        self.recovery = Recovery(last_seq, 0, False)

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True, fsync: bool = True) -> FileJournal:
        path = Path(path)
        if not path.exists() and not create:
            raise JournalError(f"{path}: no journal here (is this a run directory?)")
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalLocked(
                    f"{path}: another process holds this journal for writing (a coordinator is running?)"
                ) from None
            journal = cls._recover(path, fd, fsync, created)
        except BaseException:
            os.close(fd)
            raise
        if created:
            _fsync_dir(path.parent)
        return journal

    @classmethod
    def open_readonly(cls, path: Path | str) -> FileJournal:
        """Open for reading only: no lock, nothing truncated (a torn tail is simply the end).

        For tools (replay, status) that may look at a log a coordinator is writing.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise JournalError(f"{path}: no journal here (is this a run directory?)") from None
        try:
            return cls._recover(path, fd, False, False, readonly=True)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _recover(cls, path: Path, fd: int, fsync: bool, created: bool, *, readonly: bool = False) -> FileJournal:
        size = os.fstat(fd).st_size
        head = os.pread(fd, len(MAGIC), 0)
        if size < len(MAGIC) and MAGIC.startswith(head) and readonly:
            return cls(path, fd, 0, size, [], False, readonly=True)
        if size < len(MAGIC) and MAGIC.startswith(head):
            # Empty, or torn while writing the magic itself.
            os.ftruncate(fd, 0)
            _write_all(fd, MAGIC, 0)
            os.fsync(fd)
            size = len(MAGIC)
        elif head != MAGIC:
            raise JournalError(f"{path}: not a Smart Tuner journal (bad magic {head!r})")
        index: list[int] = []
        count = 0
        end = len(MAGIC)
        try:
            for offset, payload in _frames(fd, len(MAGIC), size):
                if count % INDEX_EVERY == 0:
                    index.append(offset)
                count += 1
                end = offset + FRAME.size + len(payload)
        except _BadFrame as bad:
            nxt = _next_valid_frame(fd, bad.offset, size)
            if nxt is not None:
                raise JournalCorrupt(path, bad.offset, count, nxt) from None
            end = bad.offset
        else:
            # An incomplete last frame is a torn tail only if no valid record follows it: a length
            # field damaged to point past the end of the file must not silently drop what follows.
            nxt = _next_valid_frame(fd, end, size) if end < size else None
            if nxt is not None:
                raise JournalCorrupt(path, end, count, nxt)
        truncated = size - end
        if truncated and not readonly:
            os.ftruncate(fd, end)
            os.fsync(fd)
        journal = cls(path, fd, count, end, index, fsync, readonly=readonly)
        journal.recovery = Recovery(count, truncated, created)
        return journal

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def offset_of(self, seq: int) -> int | None:
        """The byte offset where record ``seq`` starts (``last_seq + 1``: where the next one will),
        from the sparse index and at most ``INDEX_EVERY`` frame headers; None if out of range.
        Safe beside appends from another thread (it reads committed bytes only)."""
        last, index = self._last_seq, self._index
        if not 1 <= seq <= last + 1 or not index:
            return None
        slot = min((seq - 1) // INDEX_EVERY, len(index) - 1)
        pos, at = index[slot], slot * INDEX_EVERY + 1
        while at < seq:
            header = os.pread(self._fd, FRAME.size, pos)
            if len(header) < FRAME.size:
                return None
            length, _ = FRAME.unpack(header)
            pos, at = pos + FRAME.size + length, at + 1
        return pos

    def position(self) -> tuple[int, int, list[int]]:
        """Where a reader continues after the last record: (next seq, byte offset, sparse index of
        offsets). ``JournalFollower.resume`` takes it, so it need not read the log from the start."""
        return self._last_seq + 1, self._size, list(self._index)

    def append(self, payloads: Sequence[bytes]) -> int:
        if self._fd < 0:
            raise JournalError(f"{self.path}: journal is closed")
        if self.readonly:
            raise JournalError(f"{self.path}: opened read-only")
        if not payloads:
            return self._last_seq
        frames = []
        for p in payloads:
            if not p or len(p) > MAX_RECORD_BYTES:
                raise JournalError(f"record of {len(p)} bytes is outside 1..{MAX_RECORD_BYTES}")
            frames.append(frame(p))
        blob = b"".join(frames)
        try:
            _write_all(self._fd, blob, self._size)
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            # Leave the file as it was: nothing half-written stays behind.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise JournalError(f"{self.path}: append failed ({os.strerror(exc.errno or errno.EIO)})") from exc
        pos = self._size
        for f in frames:
            if self._last_seq % INDEX_EVERY == 0:
                self._index.append(pos)
            self._last_seq += 1
            pos += len(f)
        self._size = pos
        return self._last_seq

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        last = self._last_seq if to_seq is None else min(to_seq, self._last_seq)
        from_seq = max(from_seq, 1)
        if from_seq > last:
            return
        slot = min((from_seq - 1) // INDEX_EVERY, len(self._index) - 1)
        seq = slot * INDEX_EVERY + 1
        end = self._size
        for _, payload in _frames(self._fd, self._index[slot], end):
            if seq >= from_seq:
                yield seq, payload
            if seq >= last:
                return
            seq += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1

    def __enter__(self) -> FileJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JournalFollower:
    """Reads a journal that another process may be appending to; never writes.

    ``poll()`` returns the complete records that appeared since the last call.
    An incomplete or not-yet-valid record at the end is left for a later poll
    (the writer may be mid-append); ``poll(final=True)`` instead checks whether
    valid records follow a bad one and raises ``JournalCorrupt`` if so.
    """

    def __init__(self, path: Path | str, from_seq: int = 1) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        head = os.pread(self._fd, len(MAGIC), 0)
        if head != MAGIC and not (len(head) < len(MAGIC) and MAGIC.startswith(head)):
            os.close(self._fd)
            raise JournalError(f"{self.path}: not a Smart Tuner journal (bad magic {head!r})")
        self._pos = len(MAGIC)
        self._next_seq = 1
        self._from_seq = from_seq
        self._offsets: list[int] = []  # sparse index, as in FileJournal

    @classmethod
    def resume(cls, path: Path | str, position: tuple[int, int, list[int]]) -> JournalFollower:
        """A follower that continues at ``position`` (``FileJournal.position()`` of the same file):
        its next ``poll`` reads only what was appended since; ``seek`` back uses the index."""
        follower = cls(path)
        next_seq, offset, index = position
        follower._pos, follower._next_seq, follower._from_seq = offset, next_seq, next_seq
        follower._offsets = list(index)
        return follower

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def position(self) -> tuple[int, int, list[int]]:
        """Where this follower's next ``poll`` starts, as ``FileJournal.position()`` gives it."""
        return self._next_seq, self._pos, list(self._offsets)

    def poll(self, max_records: int | None = None, *, final: bool = False) -> list[tuple[int, bytes]]:
        size = os.fstat(self._fd).st_size
        out: list[tuple[int, bytes]] = []
        try:
            for offset, payload in _frames(self._fd, self._pos, size):
                seq = self._next_seq
                if (seq - 1) % INDEX_EVERY == 0 and (seq - 1) // INDEX_EVERY == len(self._offsets):
                    self._offsets.append(offset)  # only the first time: a seek back re-reads known records
                self._next_seq += 1
                self._pos = offset + FRAME.size + len(payload)
                if seq >= self._from_seq:
                    out.append((seq, payload))
                    if max_records is not None and len(out) >= max_records:
                        break
            else:
                # As in FileJournal._recover: an incomplete frame with valid records after it is damage.
                nxt = _next_valid_frame(self._fd, self._pos, size) if final and self._pos < size else None
                if nxt is not None:
                    raise JournalCorrupt(self.path, self._pos, self._next_seq - 1, nxt)
        except _BadFrame as bad:
            if final:
                nxt = _next_valid_frame(self._fd, bad.offset, size)
                if nxt is not None:
                    raise JournalCorrupt(self.path, bad.offset, self._next_seq - 1, nxt) from None
        return out

    def seek(self, seq: int) -> None:
        """Make the next ``poll`` start at ``seq`` (re-reading earlier records if needed)."""
        if seq < self._next_seq:
            if self._offsets:
                slot = min((max(seq, 1) - 1) // INDEX_EVERY, len(self._offsets) - 1)
                self._pos = self._offsets[slot]
                self._next_seq = slot * INDEX_EVERY + 1
            else:
                self._pos, self._next_seq = len(MAGIC), 1
        self._from_seq = seq

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def writer_active(path: Path | str) -> bool:
    """True if a process holds ``path`` open for writing (its flock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
