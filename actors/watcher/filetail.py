"""A file read from where the last read stopped: what the TensorBoard and console sources share.

    tail = FileTail(path)
    data, restarted = tail.read()     # the bytes appended since the offset (b"" if none)
    size, restarted = tail.check()    # only look (None: the file is gone)
    tail.offset += consumed           # the caller says how much of it it used

A file that was replaced (another inode: a rotated log, a re-created event file) or
truncated (smaller than the offset) is read again from its start, and ``restarted`` says
so, because whatever the caller kept of the old one (a partial line) is void. A missing
file reads as nothing. ``last_lines(path, n)``: a log's end, for an error message.
Imports the standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path


class FileTail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.inode: int | None = None

    def check(self) -> tuple[int, bool] | None:
        """The file's size and whether it is another file than last time (None: it is gone)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        restarted = self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset)
        if restarted:
            self.offset = 0
        self.inode = st.st_ino
        return st.st_size, restarted

    def read(self) -> tuple[bytes, bool]:
        found = self.check()
        if found is None:
            return b"", False
        size, restarted = found
        if size <= self.offset:
            return b"", restarted
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(size - self.offset), restarted


def last_lines(path: Path, lines: int, missing: str = "(no log)") -> str:
    """The last ``lines`` lines of a log (from its last 16 KiB), joined by " | ", for an error's detail."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return missing
    return " | ".join(text.strip().splitlines()[-lines:])
