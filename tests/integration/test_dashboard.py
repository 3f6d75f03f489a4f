"""The dashboard served on a real socket: a recorded run's pages and downloads, its access rules,
no secret in any response, and the live event stream resuming after a reconnect with
``Last-Event-ID`` while a writer keeps appending to the log: no gap, no duplicate."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp.test_utils import TestClient, TestServer

from smart_tuner.actors.dashboard.live import LiveRun
from smart_tuner.actors.dashboard.security import COOKIE, Access
from smart_tuner.actors.dashboard.server import make_app
from smart_tuner.protocol import Message
from smart_tuner.protocol import messages as m
from smart_tuner.protocol.codec import encode
from smart_tuner.state.journal import FileJournal
from tests.unit.strategies import envelope

RUN = Path(__file__).resolve().parents[1] / "fixtures" / "old_runs" / "quick-finished"
TOKEN = "test-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRETS = ("hooks-SECRET-1", "PASSWORD-2", "CURVE-SECRET-3")


def started() -> m.RunStarted:
    return m.RunStarted(
        run_id="live-run",
        config_hash="cfg",
        config={
            "budget": {"max_steps": 500},
            "alerts": {"urls": [f"slack://{SECRETS[0]}/x"]},
            "optuna_storage": f"postgresql://tuner:{SECRETS[1]}@db/optuna",
            "bus": {"curve_server_secret": SECRETS[2]},
        },
        strategy="forks",
        seed=1,
        host="box",
        pid=1,
        version="test",
    )


def metric(step: int) -> m.MetricsObserved:
    return m.MetricsObserved(segment_id=None, source="worker", step=step, metrics={"train_loss": 1.0 / step})


def append(journal: FileJournal, first: int, messages: Sequence[Message]) -> int:
    journal.append([encode(envelope(seq, msg)) for seq, msg in enumerate(messages, start=first)])
    return first + len(messages) - 1


async def read_sse(
    response: aiohttp.ClientResponse,
    until: int,
    seen: list[int],
    stop_after: int | None = None,
    lines: list[str] | None = None,
) -> None:
    """Event ids from an SSE response into ``seen``, until ``until`` (or ``stop_after`` more)."""
    read = 0
    while seen[-1:] != [until] if seen else True:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode()
        if lines is not None:
            lines.append(line)
        if line.startswith("id: "):
            seen.append(int(line[4:]))
            read += 1
            if stop_after is not None and read >= stop_after:
                return


async def serve(run_dir: Path, scenario: Any) -> None:
    live = LiveRun(run_dir, poll_s=0.05)
    app = make_app(live, Access.build(TOKEN, "127.0.0.1"))
    async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as client:
        await scenario(client)


def test_the_live_stream_resumes_after_a_reconnect_with_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    journal = FileJournal.open(run / "events.log", fsync=False)
    head = append(journal, 1, [started(), *(metric(s) for s in range(1, 50))])  # 50 events

    async def scenario(client: TestClient) -> None:
        state = await (await client.get("/api/state", headers=AUTH)).json()
        assert state["seq"] == head == 50 and state["running"] is True
        seen: list[int] = []
        first = await client.get("/events?after=0", headers=AUTH)
        assert first.headers["Content-Type"].startswith("text/event-stream")
        await read_sse(first, head, seen, stop_after=30)  # part of the history, then the browser drops
        first.close()
        more = append(journal, head + 1, [metric(s) for s in range(50, 120)])  # committed while away
        second = await client.get("/events", headers={**AUTH, "Last-Event-ID": str(seen[-1])})
        await read_sse(second, more, seen, stop_after=5)
        last = append(journal, more + 1, [metric(s) for s in range(120, 160)])  # live, while attached
        await read_sse(second, last, seen)
        second.close()
        assert seen == list(range(1, last + 1))
        state = await (await client.get("/api/state", headers=AUTH)).json()
        assert state["seq"] == last and state["overview"]["global_step"] == 159
        assert state["running"] is True and state["segments_running"] == []  # no segment scheduled in this log

    try:
        asyncio.run(serve(run, scenario))
    finally:
        journal.close()


def test_no_response_holds_a_secret_and_control_needs_token_origin_and_csrf(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    journal = FileJournal.open(run / "events.log", fsync=False)
    append(journal, 1, [started(), metric(1), metric(2)])

    async def scenario(client: TestClient) -> None:
        bodies = []
        for url in (
            "/",
            "/static/app.js",
            "/api/session",
            "/api/state",
            "/api/event/1",
            "/api/decisions",
            "/api/schedule",
            "/api/schedule?format=yaml",
            "/api/trials?format=csv",
            "/metrics",
        ):
            r = await client.get(url, headers=AUTH)
            assert r.status == 200, url
            bodies.append(await r.text())
        stream = await client.get("/events?after=0", headers=AUTH)
        seen: list[int] = []
        lines: list[str] = []
        await read_sse(stream, 3, seen, lines=lines)
        stream.close()
        bodies.append("".join(lines))
        assert seen == [1, 2, 3] and "slack://" not in bodies[-1] and '"urls":"***"' in bodies[-1]
        event = json.loads(bodies[4])
        assert event["type"] == "RunStarted" and event["data"]["config"]["alerts"]["urls"] == "***"
        for body in bodies:
            for secret in SECRETS:
                assert secret not in body

        assert (await client.get("/api/state")).status == 401  # no token
        assert (await client.get("/api/state?token=wrong")).status == 403
        assert (await client.get("/api/state", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await client.get("/api/state", headers={**AUTH, "Host": "evil.example"})).status == 403
        assert (await client.get("/api/state", headers={**AUTH, "Origin": "http://evil.example"})).status == 403
        refused = await client.post("/api/stop", headers=AUTH, json={"reason": "x"})
        assert refused.status == 403 and "X-CSRF-Token" in (await refused.json())["error"]
        csrf = (await (await client.get("/api/session", headers=AUTH)).json())["csrf"]
        foreign = await client.post(
            "/api/stop", headers={**AUTH, "X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        )
        assert foreign.status == 403
        # all checks passed: the request reaches the (here absent) coordinator and says so
        allowed = await client.post("/api/stop", headers={**AUTH, "X-CSRF-Token": csrf}, json={"reason": "x"})
        assert allowed.status == 502 and "coordinator" in (await allowed.json())["error"]
        for path in ("/files/events.log", "/files/config.yaml", "/files/../../etc/x.png", "/files/.hidden.png"):
            assert (await client.get(path, headers=AUTH)).status == 404, path

        # the token in the address once: a cookie (HttpOnly, SameSite=Strict) and a redirect without it
        login = await client.get("/?token=" + TOKEN, allow_redirects=False)
        assert login.status == 302 and login.headers["Location"] == "/"
        cookie = login.cookies[COOKIE]
        assert cookie.value == TOKEN and cookie["httponly"] and cookie["samesite"] == "Strict"
        assert (await client.get("/api/state", cookies={COOKIE: TOKEN})).status == 200

    try:
        asyncio.run(serve(run, scenario))
    finally:
        journal.close()


def test_a_finished_run_serves_its_decisions_schedule_and_tables(tmp_path: Path) -> None:
    run = tmp_path / "quick-finished"
    shutil.copytree(RUN, run)

    async def scenario(client: TestClient) -> None:
        state = await (await client.get("/api/state", headers=AUTH)).json()
        assert state["running"] is False and state["overview"]["status"]
        champion = state["overview"]["champion"]
        promoted = await (await client.get(f"/api/event/{champion['promoted_seq']}", headers=AUTH)).json()
        assert promoted["type"] == "ChampionPromoted" and promoted["decision"] and promoted["data"]["reason"]
        assert promoted["cause_chain"] and promoted["cause_chain"][0]["seq"] < promoted["seq"]
        decisions = (await (await client.get("/api/decisions?limit=5000", headers=AUTH)).json())["events"]
        assert decisions and all(d["type"] != "MetricsObserved" for d in decisions)
        assert champion["promoted_seq"] in {d["seq"] for d in decisions}
        plan = yaml.safe_load(await (await client.get("/api/schedule?format=yaml", headers=AUTH)).text())
        assert plan["champion"] == champion["segment_id"] and plan["initial"]["learning_rate"]
        csv_text = await (await client.get("/api/trials?format=csv", headers=AUTH)).text()
        assert len(csv_text.splitlines()) == 1 + len(state["trials"])
        bad = await client.get("/api/event/not-a-number", headers=AUTH)
        assert bad.status == 400 and "integer" in (await bad.json())["error"]
        assert (await client.get("/api/event/999999", headers=AUTH)).status == 404
        assert (await client.get("/api/decisions?after=x", headers=AUTH)).status == 400

    asyncio.run(serve(run, scenario))


def test_a_dashboard_started_for_a_run_never_outlives_it(tmp_path: Path) -> None:
    """``run --dashboard`` passes its pid: when that process is gone (even killed), the dashboard ends."""
    import subprocess
    import sys

    run = tmp_path / "quick-finished"
    shutil.copytree(RUN, run)
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    entry = "import sys; from smart_tuner.actors.cli.main import main; sys.exit(main())"
    dashboard = subprocess.Popen(
        [sys.executable, "-c", entry, "dashboard", str(run), "--port", "0", "--exit-with", str(parent.pid)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert dashboard.stdout is not None
        line = dashboard.stdout.readline()
        assert "?token=" in line and dashboard.poll() is None
        parent.kill()
        parent.wait()
        assert dashboard.wait(timeout=20) == 0
    finally:
        parent.kill()
        dashboard.kill()


def test_the_first_screen_continues_a_snapshot_at_its_recorded_offset_and_falls_back_when_it_is_wrong(
    tmp_path: Path,
) -> None:
    from smart_tuner.state import history
    from smart_tuner.state.snapshot import latest_snapshot_at, write_snapshot

    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    journal = FileJournal.open(run / "events.log", fsync=False)
    head = append(journal, 1, [started(), *(metric(s) for s in range(1, 3000))])
    snap = history.load(FileJournal.open_readonly(run / "events.log"), until=2500)
    write_snapshot(run / "snapshots", snap, journal.offset_of(2501))
    assert latest_snapshot_at(run / "snapshots")[1] == journal.offset_of(2501)  # type: ignore[index]
    last = append(journal, head + 1, [metric(s) for s in range(3000, 3100)])

    live = LiveRun(run)
    assert live._load_after_snapshot()  # the fast path: the snapshot, then only the records after it
    live.load()
    assert live.head == last and live.state.progress.global_step == 3099
    assert live.read(2501) is not None and live.read(2501).seq == 2501  # type: ignore[union-attr]

    for bad in (journal.offset_of(2400), 12):  # not where record 2501 starts: recovered the slow way
        for old in (run / "snapshots").iterdir():
            old.unlink()
        write_snapshot(run / "snapshots", snap, bad)
        other = LiveRun(run)
        assert not other._load_after_snapshot()
        other.load()
        assert other.head == last and other.state.progress.global_step == 3099
    journal.close()
