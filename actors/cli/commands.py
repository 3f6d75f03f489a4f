"""The read-side commands: tail, replay, status, stop, salvage (and the end-of-run summary).

They never take the journal's write lock and never modify a log a coordinator
may be writing (``salvage`` refuses while one runs). Prints to stdout/stderr;
imports the standard library, ``protocol``, ``state``, the bus and ``listening`` only.
"""

from __future__ import annotations

import asyncio
import difflib
import fnmatch
import getpass
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ...protocol import messages as m
from ...state import history, projection, timeline
from ...state.journal import FileJournal, JournalCorrupt, JournalFollower, writer_active
from ...state.model import TunerState
from ...state.queries import final_test
from ..bus import Ack, BusClient, BusError, committed_events
from ..bus.zmqbus import BusEndpoints, SocketOptions, ZmqClient, new_context
from ..rundir import RunPaths
from .listening import describe


class ToolError(Exception):
    """A command cannot do what was asked; the message says why."""


class _FollowerLog:
    """``LogReader`` over a journal another process writes (reads only complete, valid records)."""

    def __init__(self, follower: JournalFollower) -> None:
        self.follower = follower

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        self.follower.seek(from_seq)
        while True:
            batch = self.follower.poll(4096)
            if not batch:
                return
            for seq, payload in batch:
                if to_seq is not None and seq > to_seq:
                    self.follower.seek(seq)
                    return
                yield seq, payload


class _NoFeed(BusClient):
    """No coordinator to subscribe to: the stream then follows the log file alone."""

    async def propose_payload(self, payload: bytes, timeout_s: float) -> Ack:
        raise BusError("no coordinator is running")

    async def recv(self, timeout_s: float) -> bytes | None:
        await asyncio.sleep(timeout_s)
        return None

    async def aclose(self) -> None:
        return None


def tail(run_dir: Path, *, json_lines: bool, from_seq: int, type_glob: str | None, follow: bool) -> int:
    """Print a run's committed events: first what is recorded, then live as they are committed.

    No gap and no duplicate (events are ordered by seq and gaps are re-read
    from the log). Ends when the run has finished and its coordinator exited,
    or with Ctrl-C.
    """
    paths = RunPaths(run_dir)
    try:
        return asyncio.run(_tail(paths, json_lines, max(1, from_seq), type_glob, follow))
    except KeyboardInterrupt:
        return 130


async def _tail(paths: RunPaths, json_lines: bool, from_seq: int, type_glob: str | None, follow: bool) -> int:
    follower = JournalFollower(paths.journal)
    ctx = new_context()
    client: BusClient = _NoFeed()
    try:
        if follow and writer_active(paths.journal):
            try:
                client = ZmqClient(ctx, BusEndpoints.read(paths.bus), SocketOptions(linger_ms=0))
            except BusError:
                client = _NoFeed()
        finished = False  # a RunFinished since the last RunResumed

        def over() -> bool:
            return not follow or (finished and not writer_active(paths.journal))

        stream = committed_events(client, _FollowerLog(follower), from_seq, poll_s=0.25, stop_when_idle=over)
        async for env in stream:
            if isinstance(env.data, (m.RunFinished, m.RunResumed)):
                finished = isinstance(env.data, m.RunFinished)
            if type_glob and not fnmatch.fnmatchcase(env.type, type_glob):
                continue
            line = timeline.to_json(env) if json_lines else timeline.describe(env)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        follower.poll(final=True)  # a damaged middle of the log is an error, not the end
        return 0
    finally:
        await client.aclose()
        follower.close()
        ctx.term()


def _load(paths: RunPaths, until: int | None, use_snapshots: bool) -> TunerState:
    journal = FileJournal.open_readonly(paths.journal)
    try:
        return history.load(journal, until=until, snapshots=paths.snapshots if use_snapshots else None)
    finally:
        journal.close()


def replay(
    run_dir: Path, *, timeline: bool, until: int | None, verify: bool, out: Path | None, use_snapshots: bool
) -> int:
    """Rebuild a run's state from its event log (a pure fold), for post-mortems.

    By default prints the state (as tuner_state.yaml would hold it) at the head
    or at --until; --timeline prints the decisions and their reasons instead;
    --verify replays from seq 1 and compares with tuner_state.yaml byte for byte.
    """
    paths = RunPaths(run_dir)
    if verify:
        return _verify(paths)
    if timeline:
        text = "".join(line + "\n" for line in _timeline_lines(paths, until))
        data = text.encode("utf-8")
    else:
        data = projection.render(_load(paths, until, use_snapshots))
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        projection.write_atomic(out, data)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _timeline_lines(paths: RunPaths, until: int | None) -> Iterator[str]:
    journal = FileJournal.open_readonly(paths.journal)
    try:
        for env in history.events(journal, 1, until):
            if timeline.is_timeline_event(env):
                yield timeline.describe(env)
    finally:
        journal.close()


def what_if(run_dir: Path, items: list[str]) -> int:
    """The run's decisions re-made with changed settings over its recorded events (``--what-if``).

    Exit 0 when the changed settings decide as the run did, 1 at a difference (printed side by side).
    """
    from ..whatif import parse_overrides, report
    from ..whatif import what_if as replay_what_if

    paths = RunPaths(run_dir)
    overrides = parse_overrides(items)
    journal = FileJournal.open_readonly(paths.journal)
    try:
        events = list(history.events(journal))
    finally:
        journal.close()
    result = replay_what_if(events, overrides)
    for line in report(result):
        print(line)
    baseline = replay_what_if(events, {})  # the recorded settings, decided by this build
    b = baseline.divergence
    if b is not None and (result.divergence is None or b.seq <= result.divergence.seq):
        version = events[0].data.version if isinstance(events[0].data, m.RunStarted) else "?"
        print(
            f"note: with the recorded settings unchanged this build already decides differently from the one that "
            f"recorded the run (version {version}) after event #{b.seq}, the {b.actor}: the policy changed since; "
            "differences from there on are the build's, not only the settings'"
        )
    return 0 if result.divergence is None else 1


def _verify(paths: RunPaths) -> int:
    if not paths.state.is_file():
        raise ToolError(f"{paths.state}: missing, nothing to verify against")
    recorded = paths.state.read_bytes()
    at = projection.read_last_seq(paths.state)
    journal = FileJournal.open_readonly(paths.journal)
    try:
        head = journal.last_seq
        if at > head:
            print(f"MISMATCH: {paths.state} is at seq {at} but the log ends at seq {head}")
            return 1
        replayed = projection.render(history.load(journal, until=at))
    finally:
        journal.close()
    if replayed != recorded:
        diff = difflib.unified_diff(
            recorded.decode().splitlines(), replayed.decode().splitlines(), "tuner_state.yaml", "replay", lineterm=""
        )
        print("MISMATCH: replaying events.log does not reproduce tuner_state.yaml")
        for line in list(diff)[:60]:
            print(line)
        return 1
    print(f"OK: replaying events 1..{at} reproduces {paths.state} byte for byte ({len(recorded)} bytes)")
    if head > at:
        print(f"note: the log has {head - at} later event(s); the coordinator stopped before writing them out")
    return 0


def status(run_dir: Path) -> int:
    """Phase, champion, counts and the last events of a run, on one screen."""
    paths = RunPaths(run_dir)
    state = _load(paths, None, True)
    running = writer_active(paths.journal)
    c, t, h = state.control, state.tuning, state.health
    print(f"run        {state.run.run_id if state.run else paths.run_id}   ({paths.root})")
    print(
        f"coordinator {'RUNNING' if running else 'not running'}"
        f"{'' if not running else f' (pid {_coordinator_pid(paths)})'}"
    )
    if state.run:
        age = time.time() - state.run.started_ts
        print(f"strategy   {state.run.strategy}   seed {state.run.seed}   config {state.run.config_hash[:12]}")
        print(f"started    {_when(state.run.started_ts)} ({_duration(age)} ago), resumed {c.resumes} time(s)")
    print(f"phase      {c.phase}{f' ({c.status}: {c.finish_reason})' if c.status else ''}")
    print(f"events     {state.last_seq}   last at {_when(state.last_ts) if state.last_ts else '-'}")
    print(f"progress   global step {state.progress.global_step}, {state.progress.metrics_observed} metric events")
    failed = sum(1 for s in t.segments.values() if s.status == "failed")
    print(f"segments   {len(t.segments)} ({failed} failed)   trials {len(t.trials)}   promotions {t.promotions}")
    if t.champion:
        ch = t.champion
        print(f"champion   {ch.segment_id} objective {ch.objective:.5g} at step {ch.step} ({ch.checkpoint})")
    print(
        f"health     guard trips {len(h.guards)}, rollbacks {len(h.rollbacks)}, actor crashes {len(h.crashes)}, "
        f"refused messages {h.protocol_violations}"
    )
    if state.recent_decisions:
        print("decisions")
        for d in state.recent_decisions[-8:]:
            print(f"  #{d.seq:<6} {d.type:<18} {d.reason}")
    print("last events")
    journal = FileJournal.open_readonly(paths.journal)
    try:
        for env in history.events(journal, max(1, journal.last_seq - 7)):
            print("  " + timeline.describe(env))
    finally:
        journal.close()
    return 0


def _coordinator_pid(paths: RunPaths) -> str:
    import json

    try:
        return str(json.loads((paths.bus / "endpoints.json").read_text()).get("pid", "?"))
    except (OSError, ValueError):
        return "?"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def stop(run_dir: Path, *, reason: str, wait: bool, timeout_s: float) -> int:
    """Ask the run's coordinator to stop gracefully: it records the request, decides, finishes and exits."""
    paths = RunPaths(run_dir)
    if not writer_active(paths.journal):
        raise ToolError(f"{paths.root}: no coordinator is running this run")
    return asyncio.run(_stop(paths, reason, wait, timeout_s))


async def _stop(paths: RunPaths, reason: str, wait: bool, timeout_s: float) -> int:
    from ...protocol import Envelope

    ctx = new_context()
    client = ZmqClient(ctx, BusEndpoints.read(paths.bus), SocketOptions(linger_ms=0), subscribe=False)
    try:
        source = f"stop command (pid {os.getpid()}, user {getpass.getuser()})"
        env = Envelope.new(m.StopRequested(source=source, reason=reason), actor="cli")
        seq = await client.propose(env, timeout_s=min(timeout_s, 30.0))
    except BusError as exc:
        raise ToolError(f"could not reach the coordinator: {exc}") from None
    finally:
        await client.aclose()
        ctx.term()
    print(f"stop request recorded as event #{seq}")
    if not wait:
        return 0
    deadline = time.monotonic() + timeout_s
    while writer_active(paths.journal):
        if time.monotonic() > deadline:
            print(f"the coordinator is still running after {timeout_s:g} s; it will finish on its own", file=sys.stderr)
            return 1
        await asyncio.sleep(0.2)
    state = _load(paths, None, True)
    print(f"run {state.control.phase}: {state.control.status} - {state.control.finish_reason}")
    return 0


def salvage(run_dir: Path) -> int:
    """Cut a damaged journal after its last good record, keeping a full copy of the damaged file.

    Snapshots and tuner_state.yaml that describe events after the cut are moved
    aside, never deleted. Refuses while a coordinator runs.
    """
    paths = RunPaths(run_dir)
    if writer_active(paths.journal):
        raise ToolError(f"{paths.root}: a coordinator is running; stop it first")
    try:
        FileJournal.open_readonly(paths.journal).close()
    except JournalCorrupt as exc:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        keep = paths.root / f"salvaged-{stamp}"
        keep.mkdir()
        shutil.copy2(paths.journal, keep / "events.log")
        with open(paths.journal, "r+b") as fh:
            fh.truncate(exc.offset)
            fh.flush()
            os.fsync(fh.fileno())
        for snap in sorted(paths.snapshots.glob("snapshot-*.msgpack")):
            if int(snap.stem.split("-")[1]) > exc.last_good_seq:
                shutil.move(snap, keep / snap.name)
        if paths.state.is_file() and projection.read_last_seq(paths.state) > exc.last_good_seq:
            shutil.move(paths.state, keep / paths.state.name)
        lost = os.path.getsize(keep / "events.log") - exc.offset
        print(f"cut the log after seq {exc.last_good_seq} (byte {exc.offset}); {lost} bytes after it kept in {keep}")
        print(f"resume with: python run_tuner.py run --resume --run-dir {paths.root}")
        return 0
    print(f"{paths.journal}: no damage found; nothing to do")
    return 0


def print_summary(paths: RunPaths, state: TunerState) -> None:
    """What a person reads when a run ends (with the champion's test-set result when it was measured)."""
    c = state.control
    print()
    print(f"Run {paths.run_id}: {c.status or c.phase} - {c.finish_reason or 'not finished'}")
    summary = dict(c.summary)
    hparams, changed = summary.pop("champion_hparams", None), summary.pop("changed_hparams", None)
    checkpoint = summary.pop("champion_checkpoint", None)
    if summary:
        print("  " + ", ".join(f"{k}={_short(v)}" for k, v in summary.items() if v is not None))
    if checkpoint:
        print(f"  best checkpoint: {checkpoint}")
        print(f"  best hyperparameters: {_hparams_line(hparams)}")
        print(f"  changed from the start: {_hparams_line(changed) if changed else 'none (the start stood)'}")
    tested = final_test(state)
    for line in describe(tested) if tested is not None else ():
        print(line)
    print(f"  {state.last_seq} events in {paths.journal}")
    print("  look at it:")
    print(f"    python run_tuner.py status {paths.root}")
    print(f"    python run_tuner.py tail {paths.root} --no-follow")
    print(f"    python run_tuner.py replay {paths.root} --timeline")
    print(f"    python run_tuner.py replay {paths.root} --verify")
    if (paths.root / "mlflow.db").is_file():
        print(f"    mlflow ui --backend-store-uri sqlite:///{(paths.root / 'mlflow.db').resolve()}")
    if (paths.root / "tensorboard").is_dir():
        print(f"    tensorboard --logdir {paths.root / 'tensorboard'}")
    if c.phase != "finished":
        print(f"  continue it: python run_tuner.py run --resume --run-dir {paths.root}")


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _hparams_line(hparams: object) -> str:
    if not isinstance(hparams, dict) or not hparams:
        return "the trainer's defaults"
    return ", ".join(f"{k}={_short(v)}" for k, v in sorted(hparams.items()))
