"""TensorBoard event files as a metric source: every file under a log directory, tailed incrementally.

    source = TensorBoardSource(logdir)              # a watcher MetricSource
    readings = await source.poll()                  # what appeared since the last poll
    tail = EventFileTail(path); tail.read()         # one file: the complete new records

An event file is a sequence of records: an 8-byte little-endian length, its masked
CRC-32C, the payload (a serialized ``tensorboard.Event`` protobuf) and the payload's
masked CRC-32C. Records over 64 KiB (images, histograms, graphs: never a scalar) are
passed over without parsing or checking them (the CRC here is pure Python, ~0.6 µs a
byte). Writers append (torch's ``SummaryWriter`` at once, tensorboardX in
buffered bursts), so a read can end in the middle of a record: ``EventFileTail`` keeps
the byte offset of the last complete record and reads on from there next time. A file
that was replaced (another inode) or truncated is read again from its start; a record
whose CRC does not match stops that file (logged once) while the others go on.

``TensorBoardSource`` looks for ``events.out.tfevents.*`` files under the log directory
on every poll, so new files and new run subdirectories are picked up (tensorboard's own
directory watcher follows only the newest file of a folder; REFERENCE.md). Scalar
values (``simple_value``, or a scalar float tensor as torch's new-style summaries
write) are mapped to canonical names by ``watcher.canonical`` on (directory, tag);
tags that map to nothing are counted in ``unmapped`` (the probe command shows them).

Files are read in a worker thread (``asyncio.to_thread``): never on the event loop.
Imports the standard library, tensorboard's protobufs (no TensorFlow) and the watcher.
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from .filetail import FileTail
from .source import MetricSource, Reading, canonical

log = structlog.get_logger("tbsource")

PATTERN = "events.out.tfevents.*"
HEADER = 12  # length (8) + masked CRC of the length (4)
FOOTER = 4  # masked CRC of the payload
MAX_RECORD = 256 * 1024 * 1024  # a length beyond this is corruption, not a record
SCALAR_MAX = 64 * 1024  # a record this large holds no scalar summary: skipped unparsed (the CRC is pure Python)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    x = crc32c(data)
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Scalar:
    step: int
    tag: str
    value: float
    wall_time: float


class EventFileTail:
    """One event file, read incrementally: the complete records appended since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tail = FileTail(path)
        self.broken: str | None = None  # why reading stopped (a CRC mismatch), once said
        self.skipped = 0  # records too large to be scalars (images, histograms), passed over

    @property
    def offset(self) -> int:
        return self.tail.offset

    def read(self) -> list[Any]:
        """The new complete ``Event`` protobufs (none if the file is gone or broken)."""
        if self.broken is not None:
            found = self.tail.check()
            if found is None or not found[1]:
                return []
            self.broken = None  # a new file in its place: its records are worth reading
        data, restarted = self.tail.read()
        if restarted:
            log.info("event file replaced or truncated: reading it again", path=str(self.path))
        return list(self._records(data)) if data else []

    def _records(self, data: bytes) -> Iterator[Any]:
        from tensorboard.compat.proto.event_pb2 import Event

        pos = 0
        while len(data) - pos >= HEADER:
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
            if masked_crc32c(header) != header_crc or length > MAX_RECORD:
                self._break(f"bad record header at byte {self.offset + pos}")
                break
            end = pos + HEADER + length + FOOTER
            if end > len(data):
                break  # the writer is in the middle of this record: read it next time
            if length > SCALAR_MAX:  # an image, histogram or graph: never a scalar, not worth a CRC
                pos = end
                self.skipped += 1
                continue
            payload = data[pos + HEADER : pos + HEADER + length]
            (payload_crc,) = struct.unpack("<I", data[end - FOOTER : end])
            if masked_crc32c(payload) != payload_crc:
                self._break(f"payload CRC mismatch in the record at byte {self.offset + pos}")
                break
            pos = end
            try:
                event = Event.FromString(payload)
            except Exception as exc:  # a CRC-valid record that is no Event: skip it, keep reading
                log.warning("unreadable event record skipped", path=str(self.path), error=repr(exc))
                continue
            yield event
        self.tail.offset += pos  # a record cut by the writer is read again, whole, next time

    def _break(self, why: str) -> None:
        self.broken = why
        log.warning("event file corrupt: no more records read from it", path=str(self.path), why=why)


def scalars(event: Any) -> Iterator[Scalar]:
    """The scalar values in one ``Event`` (``simple_value``, or a float tensor of one element)."""
    if not event.HasField("summary"):
        return
    for v in event.summary.value:
        kind = v.WhichOneof("value")
        if kind == "simple_value":
            yield Scalar(int(event.step), v.tag, float(v.simple_value), float(event.wall_time))
        elif kind == "tensor" and v.metadata.plugin_data.plugin_name in ("scalars", ""):
            value = _tensor_scalar(v.tensor)
            if value is not None:
                yield Scalar(int(event.step), v.tag, value, float(event.wall_time))


def _tensor_scalar(t: Any) -> float | None:
    if sum(1 for d in t.tensor_shape.dim if d.size != 1):
        return None  # not one element
    if t.float_val:
        return float(t.float_val[0])
    if t.double_val:
        return float(t.double_val[0])
    if t.tensor_content and t.dtype in (1, 2):  # DT_FLOAT, DT_DOUBLE
        fmt, size = ("<f", 4) if t.dtype == 1 else ("<d", 8)
        if len(t.tensor_content) == size:
            return float(struct.unpack(fmt, t.tensor_content)[0])
    return None


def tb_canonical(tag: str, directory: str) -> str | None:
    """The watcher's TensorBoard table (every preset's rules): the mapping when no preset is named."""
    return canonical("tensorboard", tag, directory)


class TensorBoardSource(MetricSource):
    """Every event file under ``logdir`` (and under new subdirectories as they appear)."""

    name = "tensorboard"

    def __init__(
        self,
        logdir: Path | str,
        segment_of: Callable[[], str | None] = lambda: None,
        mapping: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self.logdir = Path(logdir)
        self.segment_of = segment_of
        self.mapping = mapping or tb_canonical
        self.tails: dict[Path, EventFileTail] = {}
        self.unmapped: Counter[tuple[str, str]] = Counter()  # (directory, tag) -> values seen
        self.latest: dict[str, tuple[int, float]] = {}  # canonical name -> (step, value)

    async def poll(self) -> Sequence[Reading]:
        return await asyncio.to_thread(self.read)

    def read(self) -> list[Reading]:
        """What appeared since the last call, one ``Reading`` per step, in step order."""
        for path in sorted(self.logdir.rglob(PATTERN)) if self.logdir.is_dir() else []:
            if path not in self.tails and path.is_file():
                self.tails[path] = EventFileTail(path)
        by_step: dict[int, dict[str, float]] = {}
        for path, tail in self.tails.items():
            directory = path.parent.relative_to(self.logdir).as_posix() if path.parent != self.logdir else ""
            for event in tail.read():
                for s in scalars(event):
                    name = self.mapping(s.tag, directory)
                    if name is None:
                        self.unmapped[(directory, s.tag)] += 1
                        continue
                    by_step.setdefault(s.step, {})[name] = s.value
                    if s.step >= self.latest.get(name, (-1, 0.0))[0]:
                        self.latest[name] = (s.step, s.value)
        segment = self.segment_of()
        return [Reading(step=step, metrics=metrics, segment_id=segment) for step, metrics in sorted(by_step.items())]
