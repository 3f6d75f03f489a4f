"""The worker channel over tcp with CURVE and a ZAP allow-list, on real sockets: no key, no entry."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from pathlib import Path

import pytest
import zmq

from smart_tuner.actors.bus import BusError
from smart_tuner.actors.bus.zmqbus import (
    CurveClient,
    CurveServer,
    SocketOptions,
    WorkerConnection,
    WorkerServer,
    load_keypair,
    new_context,
    write_keypair,
)

OPTS = SocketOptions(linger_ms=0)


async def exchange(tmp_path: Path, client_keys: str | None, server_allows: list[str]) -> tuple[bytes | None, int]:
    """Server with CURVE allowing ``server_allows``; one worker connecting with ``client_keys``;
    what arrived, and how many keys the allow-list refused."""
    keys = {n: load_keypair(tmp_path / f"{n}.key_secret") for n in ("server", "alice", "mallory")}
    ctx = new_context()
    allow = frozenset(keys[n][0] for n in server_allows)
    server_secret = keys["server"][1]
    assert server_secret is not None
    server = WorkerServer(ctx, "tcp://127.0.0.1:0", OPTS, curve=CurveServer(server_secret, allow))
    curve = None
    if client_keys is not None:
        public, secret = keys[client_keys]
        assert secret is not None
        curve = CurveClient(server_key=keys["server"][0], public_key=public, secret_key=secret)
    worker = WorkerConnection(ctx, server.endpoint, "w1", OPTS, curve=curve)
    with contextlib.suppress(Exception):  # refused at the handshake: the message never leaves
        await worker.send(b"hello", timeout_s=0.5)
    got = await server.recv(2.0)
    if got is not None:
        await server.send(got[0], b"welcome")
        assert await worker.recv(2.0) == b"welcome"
    refused = server.allow_list.refused if server.allow_list else 0
    await worker.aclose()
    await server.aclose()
    ctx.term()
    return (None if got is None else got[1]), refused


@pytest.fixture()
def keydir(tmp_path: Path) -> Path:
    for name in ("server", "alice", "mallory"):
        write_keypair(tmp_path, name)
    return tmp_path


def test_an_allowed_key_talks_both_ways(keydir: Path) -> None:
    assert asyncio.run(exchange(keydir, "alice", ["alice"])) == (b"hello", 0)


def test_an_unknown_key_is_refused(keydir: Path) -> None:
    got, refused = asyncio.run(exchange(keydir, "mallory", ["alice"]))
    assert got is None and refused >= 1  # the allow-list said no (the handshake itself was fine)


def test_a_plaintext_client_gets_nothing_through(keydir: Path) -> None:
    assert asyncio.run(exchange(keydir, None, ["alice"]))[0] is None


def test_key_files_secret_0600_public_0644_never_overwritten(tmp_path: Path) -> None:
    public, secret = write_keypair(tmp_path / "keys", "worker")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
    pub, sec = load_keypair(secret)
    assert sec is not None and zmq.curve_public(sec) == pub and load_keypair(public) == (pub, None)
    with pytest.raises(FileExistsError):
        write_keypair(tmp_path / "keys", "worker")
    (tmp_path / "keys" / "half.key_secret").write_text("")
    with pytest.raises(FileExistsError):
        write_keypair(tmp_path / "keys", "half")
    assert not (tmp_path / "keys" / "half.key").exists()  # nothing written when either file exists
    (tmp_path / "junk").write_text("not a certificate\n")
    with pytest.raises(BusError, match="junk"):
        load_keypair(tmp_path / "junk")


def test_a_worker_started_by_hand_on_another_host_joins_the_run(keydir: Path, tiny_data_dir: Path) -> None:
    """tcp + CURVE: our real worker, started by a person with its own key pair, says hello and trains
    the run's segments; a worker whose key is not on the allow-list never gets in."""
    import os
    import signal
    import subprocess
    import sys

    from smart_tuner.actors.runtime import ActorShell
    from smart_tuner.actors.supervisor.core import Supervisor, SupervisorIO, SupervisorPolicy
    from smart_tuner.actors.supervisor.devices import DevicePool
    from smart_tuner.actors.supervisor.launcher import WorkerSpec
    from smart_tuner.protocol import messages as m
    from tests.integration.test_supervisor import of, scheduled, wait_for
    from tests.unit.busharness import harness, propose, run_started

    server_public, server_secret = load_keypair(keydir / "server.key_secret")
    alice_public, _ = load_keypair(keydir / "alice.key")
    assert server_secret is not None

    def by_hand(name: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "smart_tuner.trainer.worker",
            "--endpoint",
            endpoint,
            "--worker-id",
            name,
            "--curve-server-key",
            server_public.decode(),
            "--curve-key-file",
            str(keydir / f"{name}.key_secret"),
            "--parent-pid",
            "0",
            "--dataset",
            "tiny",
            "--preset",
            "tiny",
            "--data-dir",
            str(tiny_data_dir),
            "--output-dir",
            str(keydir / name),
            "--threads",
            "1",
            "--val-count",
            "2",
            "--heartbeat-s",
            "0.2",
        ]
        return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)

    async def main() -> tuple[list[object], int, int | None]:
        nonlocal endpoint
        async with harness("inproc", keydir) as h:
            ctx = new_context()
            server = WorkerServer(
                ctx, "tcp://127.0.0.1:0", OPTS, curve=CurveServer(server_secret, frozenset({alice_public}))
            )
            endpoint = server.endpoint
            pool = DevicePool.create(0)
            assert pool.acquire("elsewhere") is not None  # the local device is taken: only a remote worker can train
            io = SupervisorIO(server, pool, WorkerSpec(), h.client(), keydir, SupervisorPolicy(heartbeat_timeout_s=10))
            io.accept_remote = True
            c = h.client()
            await propose(c, run_started())
            task = asyncio.create_task(ActorShell(Supervisor(io), h.client(), h.journal, poll_s=0.05).run(lambda: None))
            alice, mallory = by_hand("alice"), by_hand("mallory")
            try:
                await wait_for(h, lambda ev: bool(of(ev, m.WorkerHello)), timeout_s=120)
                await propose(c, scheduled("s1", 3))
                events = await wait_for(h, lambda ev: bool(of(ev, m.SegmentFinished, "s1")), timeout_s=120)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)  # teardown: Shutdown to every worker
                code = await asyncio.to_thread(alice.wait, 60)
                refused = server.allow_list.refused if server.allow_list else 0
                mallory_code = mallory.poll()
                for proc in (alice, mallory):
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                await server.aclose()
                ctx.term()
            return events, code, refused if mallory_code is None else -1

    endpoint = ""
    events, code, refused = asyncio.run(main())
    hellos = of(events, m.WorkerHello)  # type: ignore[arg-type]
    assert [x.worker_id for x in hellos] == ["alice"]  # type: ignore[attr-defined]
    started = of(events, m.SegmentStarted, "s1")  # type: ignore[arg-type]
    assert [x.worker_id for x in started] == ["alice"]  # type: ignore[attr-defined]
    assert code == 0  # the supervisor's Shutdown ended it cleanly
    assert refused >= 1  # mallory knocked and was turned away (and was still waiting at the door)
