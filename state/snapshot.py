"""Snapshots of the state, so that replay need not start from seq 1.

A snapshot is ``snapshot-<last_seq>.msgpack``: a CRC-framed msgpack document
``{schema, last_seq, state}``. Snapshots are a cache: one with another
``STATE_SCHEMA``, a bad CRC or an unreadable body is ignored (never trusted),
and deleting them all only makes replay slower.

Imports the standard library, msgpack and ``state`` only.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import msgpack

from .model import STATE_SCHEMA, TunerState
from .projection import write_atomic
from .serde import from_plain, to_plain

_NAME = re.compile(r"^snapshot-(\d{12})\.msgpack$")
_MAGIC = b"SMTSNAP1"


def write_snapshot(directory: Path, state: TunerState, journal_offset: int | None = None) -> Path:
    """``journal_offset``: where the record after ``state.last_seq`` starts in the log, so that a
    reader (the dashboard) can continue there without reading the log from its start."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"schema": STATE_SCHEMA, "last_seq": state.last_seq, "state": to_plain(state)}
    if journal_offset is not None:
        doc["journal_offset"] = journal_offset
    body = msgpack.packb(doc)
    path = directory / f"snapshot-{state.last_seq:012d}.msgpack"
    write_atomic(path, _MAGIC + zlib.crc32(body).to_bytes(4, "little") + body)
    return path


def read_snapshot(path: Path) -> TunerState | None:
    """The state in ``path``, or None if it is not a usable snapshot of this schema."""
    found = read_snapshot_at(path)
    return None if found is None else found[0]


def read_snapshot_at(path: Path) -> tuple[TunerState, int | None] | None:
    """The state in ``path`` and the log offset after it (None when not recorded), or None."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if not raw.startswith(_MAGIC) or len(raw) < len(_MAGIC) + 4:
        return None
    body = raw[len(_MAGIC) + 4 :]
    if zlib.crc32(body) != int.from_bytes(raw[len(_MAGIC) : len(_MAGIC) + 4], "little"):
        return None
    try:
        doc = msgpack.unpackb(body, raw=False, strict_map_key=True)
        if doc.get("schema") != STATE_SCHEMA:
            return None
        state = from_plain(TunerState, doc["state"])
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None
    offset = doc.get("journal_offset")
    if state.last_seq != doc["last_seq"]:
        return None
    return state, offset if isinstance(offset, int) and offset > 0 else None


def latest_snapshot_at(directory: Path) -> tuple[TunerState, int | None] | None:
    """The newest usable snapshot and the log offset after it."""
    if not directory.is_dir():
        return None
    found = sorted(((int(mm.group(1)), p) for p in directory.iterdir() if (mm := _NAME.match(p.name))), reverse=True)
    for _, path in found:
        result = read_snapshot_at(path)
        if result is not None:
            return result
    return None


def latest_snapshot(directory: Path, max_seq: int | None = None) -> TunerState | None:
    """The newest usable snapshot with ``last_seq <= max_seq``."""
    if not directory.is_dir():
        return None
    found = []
    for p in directory.iterdir():
        match = _NAME.match(p.name)
        if match and (max_seq is None or int(match.group(1)) <= max_seq):
            found.append((int(match.group(1)), p))
    for _, path in sorted(found, reverse=True):
        state = read_snapshot(path)
        if state is not None:
            return state
    return None
