"""The actor runtime over the in-process bus: phases, catch-up, resume, supervision.

Synchronised on committed events (ActorReady, the reactions themselves), never on sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from smart_tuner.actors.lifecycle import Lifecycle, run_status
from smart_tuner.actors.runtime import ActorCore, ActorShell, Out, RestartPolicy, supervise
from smart_tuner.actors.stopper import Stopper
from smart_tuner.protocol import Envelope
from smart_tuner.protocol import messages as m
from smart_tuner.state import history
from smart_tuner.state.fold import replay
from smart_tuner.state.model import TunerState
from tests.unit.busharness import Harness, alert, harness, propose, run_started


class Echo(ActorCore):
    """Answers every AlertSent titled 'ping…' with a GuardTripped naming it; counts its calls."""

    name = "echo"

    def __init__(self) -> None:
        self.reacted: list[int] = []
        self.resumed: list[int] = []
        self.torn_down = 0

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        self.reacted.append(env.seq)
        if isinstance(env.data, m.AlertSent) and env.data.title.startswith("aping"):
            trip = m.GuardTripped(
                guard="echo", segment_id=None, step=None, action="none", reason=f"pong {env.data.title}", evidence={}
            )
            return [Out(trip)]
        return ()

    def resume(self, state: TunerState) -> Sequence[Out]:
        self.resumed.append(state.last_seq)
        return ()

    async def teardown(self) -> None:
        self.torn_down += 1


async def wait_for(h: Harness, predicate: object, timeout_s: float = 20) -> list[Envelope]:
    """Poll the journal (not the clock) until ``predicate(events)`` holds."""
    async with asyncio.timeout(timeout_s):
        while True:
            events = list(history.events(h.journal))
            if predicate(events):  # type: ignore[operator]
                return events
            await asyncio.sleep(0.01)


def start(
    h: Harness, core: ActorCore, ready: asyncio.Event, start_state: TunerState | None = None
) -> asyncio.Task[None]:
    shell = ActorShell(core, h.client(), h.journal, start=start_state, poll_s=0.05)
    return asyncio.create_task(shell.run(ready.set))


def test_actor_catches_up_silently_then_reacts_live(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness("inproc", tmp_path) as h:
            c = h.client()
            await propose(c, run_started())
            await propose(c, alert("ping-old"))  # before the actor starts: already handled in a past life
            core = Echo()
            ready = asyncio.Event()
            task = start(h, core, ready)
            await ready.wait()
            # Caught up without reacting to anything at or before the head it found (seq 2); its own
            # ActorReady (seq 3) is live and may already have been seen.
            assert core.resumed == [2] and all(seq > 2 for seq in core.reacted)
            ping = await propose(c, alert("ping-new"))
            events = await wait_for(h, lambda ev: any(e.type == "GuardTripped" for e in ev))
            trips = [e for e in events if e.type == "GuardTripped"]
            assert len(trips) == 1 and trips[0].data.reason == "pong aping-new"  # type: ignore[attr-defined]
            cause = next(e for e in events if e.seq == ping)
            assert trips[0].cause == cause.id and trips[0].actor == "echo"
            assert any(e.type == "ActorReady" and e.data.actor == "echo" for e in events)  # type: ignore[attr-defined]
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert core.torn_down == 1

    asyncio.run(main())


def test_start_state_skips_refolding(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness("inproc", tmp_path) as h:
            c = h.client()
            await propose(c, run_started())
            for i in range(20):
                await propose(c, alert(i))
            folded = replay(history.events(h.journal))
            core = Echo()
            ready = asyncio.Event()
            task = start(h, core, ready, start_state=folded)
            await ready.wait()
            assert core.resumed == [21]
            await propose(c, alert("ping"))
            await wait_for(h, lambda ev: ev[-1].type == "GuardTripped")
            assert min(core.reacted) > 21  # never saw the events it was given as state
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


class Reporter(Echo):
    """A core that reports on the run: it must see every event up to the end, each once."""

    name = "reporter"
    follows_tail = True

    def __init__(self) -> None:
        super().__init__()
        self.observed: list[int] = []

    def observe(self, env: Envelope) -> None:
        self.observed.append(env.seq)


class Deaf:
    """A bus client whose live feed never delivers (it proposes as usual)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def recv(self, timeout_s: float) -> bytes | None:
        await asyncio.sleep(timeout_s)
        return None


def test_a_reporting_core_sees_the_events_committed_just_before_it_stopped_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness("inproc", tmp_path) as h:
            c = h.client()
            await propose(c, run_started())
            core = Reporter()
            ready = asyncio.Event()
            # a feed that stays quiet and a long poll: what is committed from now on reaches it only at teardown
            shell = ActorShell(core, Deaf(h.client()), h.journal, poll_s=3600)  # type: ignore[arg-type]
            task = asyncio.create_task(shell.run(ready.set))
            await ready.wait()
            before, seen = list(core.reacted), shell.state.last_seq
            last = [await propose(c, alert(f"last-{i}")) for i in range(5)]
            assert core.reacted == before and seen < last[0]  # not delivered
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert core.reacted == [*before, *range(seen + 1, h.journal.last_seq + 1)]  # each once, in order
            assert core.observed == list(range(1, h.journal.last_seq + 1))
            assert core.torn_down == 1

    asyncio.run(main())


def test_malformed_feed_record_is_skipped_and_the_actor_keeps_working(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness("inproc", tmp_path) as h:
            c = h.client()
            await propose(c, run_started())
            core = Echo()
            ready = asyncio.Event()
            shell = ActorShell(core, h.client(), h.journal, poll_s=0.05)
            task = asyncio.create_task(shell.run(ready.set))
            await ready.wait()
            await h.sequencer.port.publish(b"\xff\x00 not an envelope")
            await propose(c, alert("ping-after-garbage"))
            await wait_for(h, lambda ev: ev[-1].type == "GuardTripped")
            assert shell.stats.malformed == 1
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


class Crasher(ActorCore):
    """Crashes on an alert, and again on every restart: its resume re-derives the same bad decision."""

    name = "crasher"

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        if isinstance(env.data, m.AlertSent) and env.data.title == "aboom":
            raise RuntimeError("boom")
        return ()

    def resume(self, state: TunerState) -> Sequence[Out]:
        if state.health.alerts_sent:
            raise RuntimeError("boom again")
        return ()


def test_supervision_restarts_then_gives_up_and_reports(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness("inproc", tmp_path) as h:
            c = h.client()
            await propose(c, run_started())
            gave_up: list[str] = []
            readies = 0
            now = [0.0]

            def on_ready() -> None:
                nonlocal readies
                readies += 1

            async def report(event: m.ActorCrashed) -> None:
                await propose(c, event)

            def make_shell() -> ActorShell:  # a restart starts from the current state, as in the coordinator
                state = replay(history.events(h.journal))
                return ActorShell(Crasher(), h.client(), h.journal, start=state, poll_s=0.05)

            policy = RestartPolicy(max_restarts=2, window_s=60, backoff_s=0.001)
            task = asyncio.create_task(
                supervise("crasher", make_shell, on_ready, report, gave_up.append, policy, clock=lambda: now[0])
            )
            await wait_for(h, lambda ev: any(e.type == "ActorReady" for e in ev))
            await propose(c, alert("boom"))  # crashes the live actor; each restart's resume crashes again
            await asyncio.wait_for(task, 30)
            crashes = [e.data for e in history.events(h.journal) if isinstance(e.data, m.ActorCrashed)]
            assert [(x.restarts, x.gave_up) for x in crashes] == [(1, False), (2, False), (3, True)]
            assert "'boom'" in crashes[0].error and all("RuntimeError" in x.traceback for x in crashes)
            assert all("boom again" in x.error for x in crashes[1:])
            assert len(gave_up) == 1 and "crasher crashed 3 times" in gave_up[0]
            assert readies == 1  # the restarts never got past resume

    asyncio.run(main())


def test_crashes_outside_the_window_do_not_add_up() -> None:
    crashes_seen: list[m.ActorCrashed] = []
    now = [0.0]
    runs = 0

    class Flaky:
        phase = "running"

        async def run(self, on_ready: object) -> None:
            nonlocal runs
            runs += 1
            now[0] += 100.0  # each crash happens long after the previous one
            if runs <= 5:
                raise ValueError(f"flaky {runs}")

    async def report(event: m.ActorCrashed) -> None:
        crashes_seen.append(event)

    async def main() -> None:
        policy = RestartPolicy(max_restarts=1, window_s=60, backoff_s=0.0)
        await supervise(
            "flaky",
            Flaky,
            lambda: None,
            report,
            pytest.fail,
            policy,
            clock=lambda: now[0],  # type: ignore[arg-type]
        )

    asyncio.run(main())
    assert runs == 6  # five crashes, then a clean return
    assert [c.restarts for c in crashes_seen] == [1, 1, 1, 1, 1] and not any(c.gave_up for c in crashes_seen)


# --- the two cores of this build ------------------------------------------------------------


def _state(*messages: m.Message) -> TunerState:
    envs = [Envelope.new(msg, actor="t").with_seq(i + 1) for i, msg in enumerate(messages)]
    return replay(envs)


def _started(strategy: str = "none") -> m.RunStarted:
    return m.RunStarted(run_id="r", config_hash="h", config={}, strategy=strategy, seed=0, host="h", pid=1, version="t")


def test_stopper_turns_an_operator_request_into_a_decision() -> None:
    stopper = Stopper(available_strategies=frozenset({"none"}))
    request = m.StopRequested(source="stop command", reason="enough")
    state = _state(_started(), request)
    env = Envelope.new(request, actor="cli").with_seq(2)
    (out,) = stopper.react(env, state)
    assert isinstance(out.message, m.StopDecided) and out.message.rule == "operator"
    assert out.message.evidence["request_seq"] == 2 and "enough" in out.message.reason
    decided = _state(_started(), request, out.message)
    assert stopper.react(env, decided) == ()  # already stopping: no second decision
    assert stopper.resume(state)[0].message.rule == "operator"  # type: ignore[attr-defined]


def test_stopper_stops_when_the_strategy_is_not_available() -> None:
    stopper = Stopper(available_strategies=frozenset({"none"}))
    (out,) = stopper.resume(_state(_started("forks")))
    assert isinstance(out.message, m.StopDecided) and out.message.rule == "nothing_to_tune"
    assert out.message.evidence == {"strategy": "forks", "available": ["none"]}
    assert stopper.resume(_state(_started("none"))) == ()


def test_lifecycle_finishes_a_decided_stop_also_after_a_crash() -> None:
    decided = m.StopDecided(rule="operator", reason="stop requested", evidence={})
    state = _state(_started(), decided)
    (out,) = Lifecycle().react(Envelope.new(decided, actor="s").with_seq(2), state)
    assert isinstance(out.message, m.RunFinished) and out.message.status == "stopped"
    assert out.message.summary["segments"] == 0
    assert Lifecycle().resume(state)[0].message == out.message  # the coordinator died before RunFinished
    assert Lifecycle().resume(_state(_started())) == ()
    assert [run_status(r) for r in ("operator", "actor_failure", "plateau")] == ["stopped", "failed", "completed"]
