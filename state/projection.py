"""``tuner_state.yaml``: the deterministic YAML projection of the state.

``render(state)`` gives the exact bytes; ``write_atomic`` writes them with a
temp file, fsync and rename, so a reader never sees half a file. Replaying the
log to the same ``last_seq`` always renders the same bytes, which is what
``replay --verify`` checks.

Imports the standard library and ``state`` only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from . import yamlout
from .model import TunerState
from .serde import to_plain

HEADER = "# Smart Tuner state: a projection of events.log. Do not edit; `run_tuner.py replay --verify` checks it.\n"


def render(state: TunerState) -> bytes:
    doc: dict[str, Any] = {
        "last_seq": state.last_seq,
        "config_hash": state.run.config_hash if state.run else None,
    }
    doc.update(to_plain(state))
    return (HEADER + yamlout.dump(doc)).encode("utf-8")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_last_seq(path: Path) -> int:
    """The ``last_seq`` stamped in a state file (without loading the rest)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("last_seq:"):
                return int(line.split(":", 1)[1])
    raise ValueError(f"{path}: no last_seq line; not a Smart Tuner state file")
