"""Worker processes: pinned by their lease's environment, stopped as a whole process group."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from smart_tuner.actors.bus.zmqbus import SocketOptions, WorkerServer, ipc_endpoints, new_context
from smart_tuner.actors.supervisor.devices import DevicePool
from smart_tuner.actors.supervisor.launcher import WorkerProcess, WorkerSpec, worker_command
from smart_tuner.protocol import decode
from smart_tuner.protocol import messages as m


def first_line(log: Path, timeout_s: float = 30) -> str:
    """The first line the process wrote to its log (waits for it; run in a thread)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if text.strip():
            return text.strip().splitlines()[0]
        time.sleep(0.05)
    raise TimeoutError(f"nothing in {log} after {timeout_s} s")


def gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_stop_reaches_every_process_in_the_group(tmp_path: Path) -> None:
    async def main() -> None:
        lease = DevicePool.create(0).acquire("s")
        assert lease is not None
        code = (
            "import subprocess, time; p = subprocess.Popen(['sleep', '300']); print(p.pid, flush=True); time.sleep(300)"
        )
        proc = await WorkerProcess.start([sys.executable, "-c", code], lease, tmp_path / "w.log")
        grandchild = int(await asyncio.to_thread(first_line, tmp_path / "w.log"))
        assert await proc.stop(grace_s=5) == -15
        assert await asyncio.to_thread(gone, grandchild)

    asyncio.run(main())


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    async def main() -> None:
        lease = DevicePool.create(0).acquire("s")
        assert lease is not None
        code = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
            "time.sleep(300)"
        )
        proc = await WorkerProcess.start([sys.executable, "-c", code], lease, tmp_path / "w.log")
        await asyncio.to_thread(first_line, tmp_path / "w.log")
        assert await proc.stop(grace_s=0.5) == -9

    asyncio.run(main())


def test_the_lease_pins_the_worker_to_its_gpus(tmp_path: Path) -> None:
    async def main() -> None:
        pool = DevicePool.create(2, visible="5,7")
        first, second = pool.acquire("a"), pool.acquire("b", 1)
        assert first is not None and second is not None
        code = "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']), flush=True)"
        proc = await WorkerProcess.start([sys.executable, "-c", code], second, tmp_path / "w.log")
        assert await proc.wait(30) == 0
        assert await asyncio.to_thread(first_line, tmp_path / "w.log") == "'7'"

    asyncio.run(main())


def test_a_real_worker_started_from_its_spec_connects_and_stops(tiny_data_dir: Path, tmp_path: Path) -> None:
    async def main() -> None:
        ctx = new_context()
        server = WorkerServer(ctx, ipc_endpoints(tmp_path / "bus").workers, SocketOptions(linger_ms=0))
        lease = DevicePool.create(0).acquire("w0")
        assert lease is not None
        spec = WorkerSpec(
            dataset="tiny", preset="tiny", output_dir=tmp_path / "out", data_dir=tiny_data_dir, threads=1, val_count=4
        )
        proc = await WorkerProcess.start(worker_command(spec, server.endpoint, "w0", lease), lease, tmp_path / "w.log")
        try:
            async with asyncio.timeout(120):
                while True:
                    item = await server.recv(1.0)
                    if item is not None and isinstance((hello := decode(item[1]).data), m.WorkerHello):
                        break
            assert hello.pid == proc.pid and hello.device == "cpu" and item[0] == b"w0"
        finally:
            code = await proc.stop(grace_s=10)
            await server.aclose()
            ctx.term()
        assert code in (0, -15) and proc.returncode is not None

    asyncio.run(main())
