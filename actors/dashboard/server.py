"""The web dashboard: ``python run_tuner.py dashboard [RUN_DIR]`` (or ``run --dashboard``).

One aiohttp application per run directory, serving a finished run (post-mortem) or a live one:

    GET  /                      the page (static files shipped in the package, no build step)
    GET  /api/session           the CSRF value the page sends with control requests
    GET  /api/state             overview, lineage, curves, health, TTS panel: the first screen
    GET  /api/lineage           nodes (segments) and edges (forks, trains-on, rollbacks, exploits)
    GET  /api/event/{seq}       one event, its evidence, its cause chain and its correlated events
    GET  /api/decisions         the decisions on record (``?after=SEQ&limit=N``)
    GET  /api/schedule          the champion's effective schedule (``?format=json|yaml``, a download)
    GET  /api/trials            the trials table (``?format=csv`` for a download)
    GET  /events                Server-Sent Events: every committed event, ``id`` = its seq;
                                ``Last-Event-ID`` (or ``?after=SEQ``) resumes with no gap and no duplicate
    GET  /files/{path}          alignment images and listening samples (PNG, WAV) inside the run directory
    GET  /metrics               Prometheus text format
    POST /api/stop              ask the run's coordinator to stop (token, CSRF, same origin)

Everything is behind ``security.Access`` (token, Host, Origin, CSRF). Nothing secret is served:
events pass through ``views.redact``, the config file is never read out.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from ...protocol import Envelope
from ...protocol import messages as m
from ...state import timeline
from ...state.journal import writer_active
from ..bus import BusError
from ..bus.zmqbus import BusEndpoints, SocketOptions, ZmqClient, new_context
from . import views
from .live import LiveRun
from .metrics import render_metrics
from .security import Access, middleware

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
SERVED_SUFFIXES = {".png": "image/png", ".wav": "audio/wav"}
LIVE: web.AppKey[LiveRun] = web.AppKey("live", LiveRun)
ACCESS: web.AppKey[Access] = web.AppKey("access", Access)
KEEPALIVE_S = 15.0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, allow_nan=False, default=str))


def _live(request: web.Request) -> LiveRun:
    return request.app[LIVE]


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers={"Content-Type": f"{STATIC_FILES[name]}; charset=utf-8"})


async def session(request: web.Request) -> web.Response:
    live = _live(request)
    return _json(
        {
            "csrf": request.app[ACCESS].csrf,
            "run_dir": live.paths.root.name,
            "live": writer_active(live.paths.journal),
        }
    )


def first_screen(live: LiveRun) -> dict[str, Any]:
    state, run_dir = live.state, live.paths.root
    return {
        "seq": state.last_seq,
        "running": writer_active(live.paths.journal),
        "overview": views.overview(state),
        "lineage": views.lineage(state, run_dir),
        "curves": views.curves(state, live.train_last),
        "health": views.health(state),
        "tts": views.tts(state, run_dir),
        "trials": views.trials(state),
        "segments_running": views.running(state, live.at),
        "error": live.error,
    }


async def api_state(request: web.Request) -> web.Response:
    return _json(first_screen(_live(request)))


async def api_lineage(request: web.Request) -> web.Response:
    live = _live(request)
    return _json({"seq": live.head, **views.lineage(live.state, live.paths.root)})


def _int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name} must be an integer, got {raw!r}"}), content_type="application/json"
        ) from None


def _event_doc(env: Envelope) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(timeline.to_json(env))
    doc["data"] = views.redact(doc["data"])
    doc["gist"] = timeline.gist(env)
    doc["decision"] = bool(env.data.DECISION)
    return doc


async def api_event(request: web.Request) -> web.Response:
    live = _live(request)
    try:
        seq = int(request.match_info["seq"])
    except ValueError:
        return _json({"error": "the event's seq must be an integer"}, 400)
    env = live.read(seq)
    if env is None:
        return _json({"error": f"no event #{seq} (the log has {live.head})"}, 404)
    doc = _event_doc(env)
    doc["cause_chain"] = live.cause_chain(env)
    doc["correlated"] = [s for s in live.correlated(env.corr) if s != seq] if env.corr else []
    return _json(doc)


async def api_decisions(request: web.Request) -> web.Response:
    """Decisions (and lifecycle events), oldest first, after ``after``; from the log."""
    live = _live(request)
    after, limit = _int(request, "after", 0), max(1, min(_int(request, "limit", 200), 2000))
    out: list[dict[str, Any]] = []
    async for _seq, doc in live.catch_up(after, live.head):
        item = json.loads(doc)
        if item["type"] in (m.MetricsObserved.TYPE, m.ActorReady.TYPE):
            continue
        out.append(item)
        if len(out) >= limit:
            break
    return _json({"events": out, "head": live.head})


async def api_schedule(request: web.Request) -> web.StreamResponse:
    live = _live(request)
    plan = views.schedule(live.state)
    fmt = request.query.get("format", "json")
    name = f"schedule-{live.paths.root.name}"
    if fmt == "yaml":
        doc = {"champion": plan.get("champion"), "initial": plan["initial"], "changes": plan["changes"]}
        body = yaml.safe_dump(doc, sort_keys=False)
        return web.Response(
            text=body,
            content_type="application/yaml",
            headers={"Content-Disposition": f'attachment; filename="{name}.yaml"'},
        )
    if fmt != "json":
        return _json({"error": f"format must be json or yaml, got {fmt!r}"}, 400)
    response = _json(plan)
    if request.query.get("download"):
        response.headers["Content-Disposition"] = f'attachment; filename="{name}.json"'
    return response


async def api_trials(request: web.Request) -> web.StreamResponse:
    live = _live(request)
    if request.query.get("format") == "csv":
        return web.Response(
            text=views.trials_csv(live.state),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="trials-{live.paths.root.name}.csv"'},
        )
    return _json({"trials": views.trials(live.state)})


async def files(request: web.Request) -> web.StreamResponse:
    """Images and samples under the run directory; nothing else (no logs, no config, no checkpoints)."""
    root = _live(request).paths.root.resolve()
    rel = request.match_info["path"]
    path = (root / rel).resolve()
    if path.suffix.lower() not in SERVED_SUFFIXES or any(p.startswith(".") for p in Path(rel).parts):
        raise web.HTTPNotFound()
    try:
        path.relative_to(root)
    except ValueError:
        raise web.HTTPNotFound() from None
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Type": SERVED_SUFFIXES[path.suffix.lower()]})


async def metrics(request: web.Request) -> web.Response:
    live = _live(request)
    body, content_type = render_metrics(live.state, subscribers=live.subscribers)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def stop(request: web.Request) -> web.Response:
    live = _live(request)
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        body = {}
    reason = str(body.get("reason") or "stopped from the dashboard")[:500] if isinstance(body, dict) else ""
    if not writer_active(live.paths.journal):
        return _json({"error": "no coordinator is running this run"}, 409)
    peer = request.remote or "?"
    source = f"dashboard (pid {os.getpid()}, user {getpass.getuser()}, from {peer})"
    ctx = new_context()
    try:
        client = ZmqClient(ctx, BusEndpoints.read(live.paths.bus), SocketOptions(linger_ms=0), subscribe=False)
        try:
            seq = await client.propose(Envelope.new(m.StopRequested(source=source, reason=reason), actor="cli"), 10.0)
        finally:
            await client.aclose()
    except (BusError, OSError) as exc:
        return _json({"error": f"could not reach the coordinator: {exc}"}, 502)
    finally:
        ctx.term()
    return _json({"seq": seq, "reason": reason})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events, one per committed event (``id``: its seq). Resumes after the
    ``Last-Event-ID`` the browser sends on reconnecting (or ``?after=SEQ``): the log fills
    everything up to the live head, then the live feed, each seq once."""
    live = _live(request)
    header = request.headers.get("Last-Event-ID")
    try:
        after = int(header) if header else _int(request, "after", live.head)
    except ValueError:
        after = live.head
    after = max(0, after)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    last = after
    try:
        with live.attached():  # from here on committed events are kept for the streams
            await response.write(b"retry: 2000\n\n")
            while True:
                batch = live.after(last)
                if batch is None:  # behind what is kept (or from before it): the log has it
                    chunk: list[bytes] = []
                    async for seq, doc in live.catch_up(last, live.head):
                        chunk.append(_sse(seq, doc))
                        last = seq
                        if len(chunk) >= 1024:
                            await response.write(b"".join(chunk))
                            chunk = []
                    if chunk:
                        await response.write(b"".join(chunk))
                    continue
                if batch:
                    await response.write(b"".join(_sse(seq, doc) for seq, doc in batch))
                    last = batch[-1][0]
                    continue
                if not await live.wait(KEEPALIVE_S):
                    await response.write(b": keep-alive\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


def _sse(seq: int, doc: str) -> bytes:
    return f"id: {seq}\ndata: {doc}\n\n".encode()


def make_app(live: LiveRun, access: Access) -> web.Application:
    app = web.Application(middlewares=[middleware(access)])
    app[LIVE] = live
    app[ACCESS] = access
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/session", session)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/api/lineage", api_lineage)
    app.router.add_get("/api/event/{seq}", api_event)
    app.router.add_get("/api/decisions", api_decisions)
    app.router.add_get("/api/schedule", api_schedule)
    app.router.add_get("/api/trials", api_trials)
    app.router.add_get("/events", events)
    app.router.add_get("/files/{path:.+}", files)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/api/stop", stop)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await live.start()
        yield
        await live.stop()

    app.cleanup_ctx.append(lifecycle)
    if access.base_url == "/":
        return app
    root = web.Application()
    root.add_subapp(access.base_url.rstrip("/"), app)
    return root


async def serve(
    run_dir: Path, access: Access, host: str, port: int, *, announce: Any = print, until: asyncio.Event | None = None
) -> None:
    """Serve ``run_dir`` until cancelled (or ``until`` is set); ``announce`` gets the address with its token."""
    live = LiveRun(run_dir)
    runner = web.AppRunner(make_app(live, access), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    shown = host if ":" not in host else f"[{host}]"
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    announce(f"http://{shown}:{bound}{access.base_url}?token={access.token}")
    try:
        if until is None:
            await asyncio.Event().wait()
        else:
            await until.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
