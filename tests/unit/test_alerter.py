"""The alerter: what deserves an alert, and a delivery that never blocks, floods or leaks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from smart_tuner.actors.alerter import Alert, AlertChannels, alert_for, apprise_send
from smart_tuner.protocol import Envelope
from smart_tuner.protocol import messages as m
from smart_tuner.state import history
from tests.unit.busharness import harness, propose, run_started


def env(message: m.Message, seq: int = 5) -> Envelope:
    return Envelope(seq=seq, id="x", ts=0.0, type=message.TYPE, tv=1, actor="t", corr=None, cause=None, data=message)


def test_what_deserves_an_alert() -> None:
    from smart_tuner.state.model import TunerState

    s = TunerState()
    guard = m.GuardTripped(guard="nan", segment_id="s1", step=3, action="roll back", reason="NaN loss", evidence={})
    a = alert_for(env(guard), s)
    assert a is not None and a.severity == "warning" and "nan" in a.title and "roll back" in a.body
    kept = m.ChampionPromoted(
        segment_id="s",
        trial_id=None,
        checkpoint="c",
        checkpoint_sha256="x",
        objective=0.1,
        previous_objective=0.2,
        step=9,
        hparams={},
        kept=True,
        reason="r",
        evidence={},
    )
    assert alert_for(env(kept), s) is None  # the champion standing is not news
    fatal = m.StopDecided(rule="fatal_error", reason="broken", evidence={})
    assert alert_for(env(fatal), s).severity == "error"  # type: ignore[union-attr]
    assert alert_for(env(m.MetricsObserved(segment_id="s", source="w", step=1, metrics={})), s) is None


class Recorder:
    def __init__(self, fail_times: int = 0, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail_times, self.delay_s = fail_times, delay_s

    async def __call__(self, url: str, alert: Alert) -> None:
        self.calls.append((url, alert.title))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if len(self.calls) <= self.fail_times:
            raise RuntimeError("delivery failed")


async def deliver(tmp_path: Path, channels: AlertChannels, alerts: list[Alert]) -> list[m.AlertSent]:
    async with harness("inproc", tmp_path) as h:
        await propose(h.client(), run_started())
        await channels.start(h.client())
        for a in alerts:
            channels.offer(a)
        await channels.close(drain_s=30)
        return [e.data for e in history.events(h.journal) if isinstance(e.data, m.AlertSent)]


URL = "slack://T000/B000/SECRETTOKEN"


def test_dedup_and_severity_filter_and_the_console_sees_everything(tmp_path: Path) -> None:
    rec = Recorder()
    channels = AlertChannels([URL], min_severity="warning", send=rec)
    alerts = [
        Alert("warning", "w1", "b", "k1"),
        Alert("warning", "w1 again", "b", "k1"),
        Alert("info", "i", "b", "k2"),
        Alert("error", "e", "b", "k3"),
    ]
    sent = asyncio.run(deliver(tmp_path, channels, alerts))
    assert [c[1] for c in rec.calls] == ["w1", "e"]
    assert [(s.channel, s.title, s.ok) for s in sent] == [("slack", "w1", True), ("slack", "e", True)]
    assert all("SECRET" not in json.dumps([s.channel, s.title, s.error]) for s in sent)


def test_failures_are_retried_with_backoff_then_recorded_without_the_url(tmp_path: Path) -> None:
    rec = Recorder(fail_times=6)
    channels = AlertChannels([URL], send=rec, backoff_s=0.01)
    sent = asyncio.run(deliver(tmp_path, channels, [Alert("error", "a", "b", "k1"), Alert("error", "b", "b", "k2")]))
    assert len(rec.calls) == 6  # three tries each
    assert [(s.ok, s.error) for s in sent] == [(False, "RuntimeError: delivery failed")] * 2
    assert all("SECRET" not in (s.error or "") for s in sent)


def test_a_slow_channel_times_out_and_the_rate_limit_holds(tmp_path: Path) -> None:
    slow = Recorder(delay_s=5.0)
    channels = AlertChannels([URL], send=slow, backoff_s=0.01, timeout_s=0.05, rate_limit_per_min=2)
    alerts = [Alert("error", f"a{i}", "b", f"k{i}") for i in range(5)]
    sent = asyncio.run(deliver(tmp_path, channels, alerts))
    assert [s.title for s in sent] == ["a0", "a1"] and channels.dropped == 3
    assert all(s.error == "timed out after 0.05 s" for s in sent)


def test_a_real_apprise_delivery_to_a_local_webhook(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def main() -> list[m.AlertSent]:
        async def hook(request: web.Request) -> web.Response:
            received.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            channels = AlertChannels([f"json://127.0.0.1:{port}/hook"], send=apprise_send)
            return await deliver(tmp_path, channels, [Alert("warning", "guard nan tripped", "rolled back", "k")])
        finally:
            await runner.cleanup()

    sent = asyncio.run(main())
    assert [(s.channel, s.ok) for s in sent] == [("json", True)]
    assert received and received[0]["title"] == "guard nan tripped" and received[0]["message"] == "rolled back"
