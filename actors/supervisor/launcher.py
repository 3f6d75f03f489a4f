"""Starting and stopping worker processes: argv only, own process group, whole-group kill.

    proc = await WorkerProcess.start(worker_command(spec, endpoint, "w0", lease), lease, log_file)
    ...
    code = await proc.stop(grace_s=10)     # SIGTERM to the group, then SIGKILL to the group

A worker runs in a session (and process group) of its own, so a stop reaches every
process it started (data loaders, torchrun's ranks), and a Ctrl-C in the coordinator's
terminal does not reach it directly: the supervisor decides how it ends. Commands are
argv lists, never a shell. The worker's stdout and stderr go to a log file in the run
directory. Waiting for a process runs in a thread (``Popen.wait`` blocks).
``GroupProcess.escalate`` is the stop in steps that both use: the workers here (SIGTERM,
then SIGKILL) and the user's script in external mode (SIGINT, SIGTERM, SIGKILL).

Imports the standard library and ``actors.devices`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .devices import Lease


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What every worker of a run is started with (the trainer's side of the config)."""

    dataset: str = "demo"
    preset: str = "demo"
    output_dir: Path = Path("trainer")
    data_dir: Path | None = None
    threads: int | None = None
    val_count: int = 16
    test_count: int = 0  # held out of training and validation: the run's test set (trainer.test_count)
    heartbeat_s: float = 1.0
    hparams: str = ""
    env: tuple[tuple[str, str], ...] = ()  # extra environment (secrets go here, never into argv: ps shows argv)
    module: str = (
        "smart_tuner.trainer.worker"  # the worker program (``python -m``); another one speaks the same protocol
    )
    external: bool = False  # actors.external: the user's script; its spec travels in ``env``
    ranks: int = 1  # devices per worker: > 1 runs our worker under torchrun (a DDP trial); external: the script's


EXTERNAL_MODULE = "smart_tuner.actors.external.worker"
EXTERNAL_SPEC_ENV = "SMART_TUNER_EXTERNAL"  # the resolved external section, as JSON (it may hold secrets)


def worker_command(spec: WorkerSpec, endpoint: str, worker_id: str, lease: Lease) -> list[str]:
    common = [
        sys.executable,
        "-m",
        EXTERNAL_MODULE if spec.external else spec.module,
        "--endpoint",
        endpoint,
        "--worker-id",
        worker_id,
        "--output-dir",
        str(spec.output_dir),
        "--device",
        lease.device,
        "--heartbeat-s",
        str(spec.heartbeat_s),
        "--parent-pid",
        str(os.getpid()),
    ]
    if spec.external:  # the script's threads, set through its environment by the external worker
        return [*common, "--threads", str(spec.threads)] if spec.threads else common
    cmd = [*common, "--dataset", spec.dataset, "--preset", spec.preset, "--val-count", str(spec.val_count)]
    if spec.ranks > 1:  # a DDP trial: torchrun starts one process per device; rank 0 talks to the supervisor.
        # --standalone picks a free rendezvous port, so trials side by side on one host never collide.
        cmd[1:3] = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(spec.ranks), "-m", cmd[2]]
    if spec.test_count:
        cmd += ["--test-count", str(spec.test_count)]
    if spec.data_dir is not None:
        cmd += ["--data-dir", str(spec.data_dir)]
    if spec.threads:
        cmd += ["--threads", str(spec.threads)]
    if spec.hparams:
        cmd += ["--hparams", spec.hparams]
    return cmd


class GroupProcess:
    """A child in a process group of its own: signals go to the whole group."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.stopped_by: str | None = None  # the last signal a stop sent (None: it had exited by itself)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout_s``."""
        try:
            return await asyncio.to_thread(self.popen.wait, timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group is already gone
            os.killpg(self.popen.pid, sig)

    async def escalate(self, steps: Sequence[tuple[signal.Signals, float]]) -> int:
        """Each signal to the group in turn, waiting its timeout for the exit; then SIGKILL; the exit code."""
        for sig, wait_s in (*steps, (signal.SIGKILL, 30.0)):
            if self.popen.poll() is not None:
                break
            self.stopped_by = sig.name
            self._signal_group(sig)
            await self.wait(wait_s)
        self._signal_group(signal.SIGKILL)  # anything it left behind in its group goes too
        code = self.popen.poll()
        return code if code is not None else -signal.SIGKILL

    def kill(self) -> None:
        """SIGKILL the whole group now (the coordinator is going down)."""
        self._signal_group(signal.SIGKILL)


class WorkerProcess(GroupProcess):
    def __init__(self, popen: subprocess.Popen[bytes], lease: Lease) -> None:
        super().__init__(popen)
        self.lease = lease

    @classmethod
    async def start(
        cls, argv: Sequence[str], lease: Lease, log_file: Path, env_extra: Sequence[tuple[str, str]] = ()
    ) -> WorkerProcess:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **lease.env, **dict(env_extra), "PYTHONUNBUFFERED": "1"}

        def spawn() -> subprocess.Popen[bytes]:
            with open(log_file, "ab") as log:  # the child keeps its own descriptor
                return subprocess.Popen(
                    list(argv),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        return cls(await asyncio.to_thread(spawn), lease)

    async def stop(self, grace_s: float = 10.0) -> int:
        """SIGTERM to the whole group, SIGKILL to the group after ``grace_s``; returns the exit code."""
        return await self.escalate(((signal.SIGTERM, grace_s),))
