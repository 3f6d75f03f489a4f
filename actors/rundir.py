"""The run directory: where one tuning run keeps everything.

::

    runs/<run_id>/
      events.log          the journal (the truth)
      tuner_state.yaml    projection of the journal (replay --verify checks it)
      config.yaml         the config as recorded (``${ENV}`` templates intact)
      snapshots/          state snapshots for fast replay (a cache)
      logs/               coordinator.jsonl (structured logs)
      bus/                ipc sockets (mode 0700) and endpoints.json

Imports the standard library only.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

RUNS_DIR = Path("runs")


@dataclass(frozen=True, slots=True)
class RunPaths:
    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "events.log"

    @property
    def state(self) -> Path:
        return self.root / "tuner_state.yaml"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def bus(self) -> Path:
        return self.root / "bus"

    @property
    def run_id(self) -> str:
        return self.root.name

    def create(self) -> None:
        for path in (self.root, self.snapshots, self.logs):
            path.mkdir(parents=True, exist_ok=True)
        self.bus.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.bus, 0o700)


def new_run_id() -> str:
    """``YYYYMMDD-HHMMSS-xxxx``: sorts by start time, unique enough for one machine."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "-" + secrets.token_hex(2)


def latest_run(runs_dir: Path = RUNS_DIR) -> Path | None:
    """The most recently started run under ``runs_dir`` (by its journal's mtime)."""
    if not runs_dir.is_dir():
        return None
    runs = [p for p in runs_dir.iterdir() if (p / "events.log").is_file()]
    return max(runs, key=lambda p: (p / "events.log").stat().st_mtime, default=None)


def resolve_run_dir(arg: str | None, runs_dir: Path = RUNS_DIR) -> Path:
    """A run directory from a CLI argument: a path, a run id under ``runs/``, or the latest run."""
    if arg is None:
        latest = latest_run(runs_dir)
        if latest is None:
            raise FileNotFoundError(f"no runs under {runs_dir}/ (start one with `run_tuner.py run`)")
        return latest
    path = Path(arg)
    if (path / "events.log").is_file():
        return path
    if (runs_dir / arg / "events.log").is_file():
        return runs_dir / arg
    raise FileNotFoundError(f"{arg}: not a run directory (no events.log there or under {runs_dir}/)")
