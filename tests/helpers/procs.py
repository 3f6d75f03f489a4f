"""Process checks the tests share."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for whoever adopted it to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]  # the name may hold spaces
    except OSError:
        return False
    return state != "Z"
