"""The script's checkpoints: which exist, at which step, and whether one is completely written.

``Checkpoints``: one folder's checkpoints (a glob, the step from a pattern in the name),
ordered by step; ``first_complete`` is where a segment ends. A torch zip file is complete
once its central directory is written and every member's CRC checks; any other file or
folder once it has not changed for ``stable_s`` (or its writer has exited).
``sha256_of``: a checkpoint file's digest, or a folder's.

Imports the standard library and ``trainer.fileio`` only: never torch (the zip is read as a
zip), nothing of the worker protocol, the script's process or the log sources.
"""

from __future__ import annotations

import hashlib
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ...trainer.fileio import sha256_file


@dataclass
class Checkpoints:
    """The script's checkpoints in one folder: ``glob``, the step from ``step_pattern``, ordered by step.

    A segment ends at the first complete one at or past its last step: the script may have
    saved more by the time it stops, but those steps are not the segment's."""

    folder: Path
    glob: str
    step_pattern: re.Pattern[str]
    stable_s: float = 2.0  # a file that is not a zip is complete once unchanged this long (or its writer is gone)
    seen: dict[Path, tuple[int, float, float]] = field(default_factory=dict)  # (size, mtime, since when)

    def step_of(self, path: Path | str) -> int | None:
        found = self.step_pattern.search(Path(path).name)
        return int(found.group(1)) if found else None

    def listed(self) -> list[tuple[int, Path]]:
        out = []
        for path in self.folder.glob(self.glob) if self.folder.is_dir() else []:
            step = self.step_of(path)
            if step is not None:
                out.append((step, path))
        return sorted(out, key=lambda sp: (sp[0], _mtime(sp[1])))

    def first_complete(self, at_least: int, writer_gone: bool = False) -> tuple[int, Path] | None:
        """The complete checkpoint nearest past ``at_least`` (step >= it): where the segment ends."""
        for step, path in self.listed():
            if step >= at_least and self.complete(path, writer_gone):
                return step, path
        return None

    def complete(self, path: Path, writer_gone: bool = False) -> bool:
        """A torch zip file whose central directory is written and every member's CRC checks; any other
        file (or folder) once its size and mtime have not changed for ``stable_s``, or at once when the
        process that wrote it has exited."""
        try:
            if path.is_file():
                with open(path, "rb") as f:
                    zipped = f.read(4) == b"PK\x03\x04"
                if zipped:
                    try:
                        with zipfile.ZipFile(path) as z:
                            return z.testzip() is None
                    except (zipfile.BadZipFile, EOFError, OSError):
                        return False  # still being written: its end record is not there yet
                size, mtime = path.stat().st_size, path.stat().st_mtime
            else:
                files = [p.stat() for p in path.rglob("*") if p.is_file()]
                size, mtime = sum(f.st_size for f in files), max((f.st_mtime for f in files), default=0.0)
        except OSError:
            return False  # gone or changing under us: look again next time
        if size == 0:
            return False
        if writer_gone:
            return True
        now = time.monotonic()
        before = self.seen.get(path)
        if before is None or before[:2] != (size, mtime):
            self.seen[path] = (size, mtime, now)
            return False
        return now - before[2] >= self.stable_s


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def sha256_of(path: Path) -> str:
    """A checkpoint file's sha256; for a folder, the sha256 of its files' digests in name order."""
    if path.is_file():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("".join(sha256_file(p) for p in files).encode()).hexdigest()
