"""The end-to-end harness: ``python run_tuner.py ...`` as real subprocesses in a scratch directory.

``cli.run(...)`` runs a command to its end (with a deadline); ``cli.spawn(...)`` starts one in the
background (its output goes to files, so a chatty process never blocks on a full pipe). Every
process gets its own session and whatever is still alive at teardown has its process group killed.
``cli.events(run_dir)`` reads the journal back, as ``tail`` and ``replay`` do, and
``cli.wait_until(predicate, what)`` is the only way a test waits: it polls an observable fact
every 50 ms, with a deadline (no sleeps for synchronisation). The ``cli`` fixture is in conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from smart_tuner.protocol import Envelope
from smart_tuner.state import history
from smart_tuner.state.journal import FileJournal, JournalError

RUN_TUNER = Path(__file__).resolve().parents[2] / "run_tuner.py"
COMMAND_TIMEOUT_S = 60.0  # a deadline for a stuck command, far above a normal one (well under a second)
WAIT_TIMEOUT_S = 30.0  # a deadline for an observable fact, far above the normal wait
POLL_S = 0.05
SECRET_ENV = "ST_TEST_SECRET_URL"


def wait_until(
    predicate: Callable[[], object], what: str, timeout_s: float = WAIT_TIMEOUT_S, proc: Spawned | None = None
) -> None:
    """Poll ``predicate`` every 50 ms until it is true; fail after ``timeout_s`` (or when ``proc`` dies first)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"{proc.name} exited ({proc.proc.returncode}) before {what}:\n{proc.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s} s: {what}")
        time.sleep(POLL_S)


@dataclass
class Spawned:
    """A background ``run_tuner.py`` process, its stdout and stderr in files."""

    name: str
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    files: tuple[IO[bytes], IO[bytes]]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout_s: float = COMMAND_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout_s} s:\n{self.output()}") from None

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout\n{self.stdout()}--- stderr\n{self.stderr()}"

    def kill_group(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # its leader is gone, but not necessarily the group
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for fh in self.files:
            fh.close()


class Cli:
    """Runs ``run_tuner.py`` with ``cwd`` as the working directory (``runs/`` is created there)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.spawned: list[Spawned] = []

    def _argv(self, args: tuple[str | Path, ...]) -> list[str]:
        return [sys.executable, str(RUN_TUNER), *map(str, args)]

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**self.env, **(extra or {})}

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to its end; its stdout and stderr come back as text."""
        proc = subprocess.Popen(
            self._argv(args),
            cwd=self.cwd,
            env=self._env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"{args} still running after {timeout_s} s:\n{out}\n{err}") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def spawn(self, name: str, *args: str | Path, env: dict[str, str] | None = None) -> Spawned:
        """Start a command in the background, in a session of its own (killed at teardown if still alive)."""
        out_path, err_path = self.cwd / f"{name}.out", self.cwd / f"{name}.err"
        out_fh, err_fh = open(out_path, "wb"), open(err_path, "wb")  # noqa: SIM115 - closed in kill_group
        proc = subprocess.Popen(
            self._argv(args),
            cwd=self.cwd,
            env=self._env(env),
            stdin=subprocess.DEVNULL,
            stdout=out_fh,
            stderr=err_fh,
            start_new_session=True,
        )
        spawned = Spawned(name, proc, out_path, err_path, (out_fh, err_fh))
        self.spawned.append(spawned)
        return spawned

    def close(self) -> None:
        for spawned in self.spawned:
            spawned.kill_group()

    @staticmethod
    def events(run_dir: Path) -> list[Envelope]:
        """The committed events of a run (none while its journal does not exist yet)."""
        try:
            journal = FileJournal.open_readonly(run_dir / "events.log")
        except JournalError:
            return []
        try:
            return list(history.events(journal))
        finally:
            journal.close()

    wait_until = staticmethod(wait_until)

    def types(self, run_dir: Path) -> list[str]:
        return [env.type for env in self.events(run_dir)]

    def write_config(self, name: str, text: str) -> Path:
        path = self.cwd / name
        path.write_text(text)
        return path
