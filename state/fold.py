"""Folding committed events into a state: ``replay`` and ``fold`` (what every replay runs), and
``Folder``, the incremental fold the sequencer commits with.

    state = replay(envelopes)                       # a fresh state by default
    state = fold((seq, ts, message) for ...)        # the hot loop (history.committed feeds it)

Both give the same state as applying ``reducers.apply`` one event at a time (a property
test checks it). Imports ``protocol``, ``state.model`` and ``state.reducers`` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..protocol import Envelope, Message
from ..protocol import messages as m
from .model import TunerState
from .reducers import InvalidTransition, ProgressRun, changes_for


def replay(events: Iterable[Envelope], state: TunerState | None = None) -> TunerState:
    """Fold ``events`` into ``state`` (a fresh state by default); same result as folding ``apply``."""
    return fold(((env.seq, env.ts, env.data) for env in events), state)


# What ``fold`` takes per event: the message, or (from ``history.committed``) the raw data map of a
# current-version MetricsObserved, which it accumulates without building a message object.
Folded = Message | dict[str, Any]


def fold(items: Iterable[tuple[int, float, Folded]], state: TunerState | None = None) -> TunerState:
    """``replay`` over ``(seq, ts, message)`` triples: the hot loop of every replay (see ``Folder``)."""
    folder = Folder(TunerState() if state is None else state)
    folder.add_all(items)
    return folder.result()


class Folder:
    """Events folded into a state in seq order: what ``fold`` and the sequencer both use.

        folder = Folder(state)
        folder.add(seq, ts, message)    # raises ReducerError; the folder is as before the call
        folder.add_all(triples)         # the same, many at once; a failure keeps those before it
        state = folder.result()

    Two shortcuts keep a million-event replay within seconds, neither changing the result
    (a property test compares it with folding ``apply``): ``last_seq``/``last_ts`` are
    stamped once at the end (and before a ``RunResumed``, whose reducer reads them), and a
    run of consecutive ``MetricsObserved`` events, whose reducer reads and writes only
    ``progress``, is accumulated in one ``ProgressRun`` and written into the state before
    the next other event (which may read it).
    """

    __slots__ = ("_run", "last_seq", "last_ts", "state")

    def __init__(self, state: TunerState) -> None:
        self.state = state
        self.last_seq, self.last_ts = state.last_seq, state.last_ts
        self._run: ProgressRun | None = None

    def add(self, seq: int, ts: float, message: Folded) -> None:
        self.add_all(((seq, ts, message),))

    def add_all(self, items: Iterable[tuple[int, float, Folded]]) -> None:
        # One loop over locals: a method call per event would cost a replay ~7 %.
        last_seq, last_ts, run = self.last_seq, self.last_ts, self._run
        try:
            for seq, ts, message in items:
                if seq != last_seq + 1:
                    raise InvalidTransition(f"event seq {seq} does not follow the state's last seq {last_seq}")
                kind = type(message)
                if kind is dict:
                    if run is None:
                        run = self._started_run()
                    run.observe(message["step"], message["metrics"])  # type: ignore[index]
                elif kind is m.MetricsObserved:
                    if run is None:
                        run = self._started_run()
                    run.observe(message.step, message.metrics)  # type: ignore[union-attr]
                else:
                    if run is not None:
                        self.state = replace(self.state, progress=run.result())
                        run = None
                    state = self.state
                    if kind is m.RunResumed:  # its reducer reads the last event's time (the pause it ends)
                        state = replace(state, last_seq=last_seq, last_ts=last_ts)
                    self.state = replace(state, **changes_for(state, seq, ts, message))  # type: ignore[arg-type]
                last_seq, last_ts = seq, ts
        finally:
            self.last_seq, self.last_ts, self._run = last_seq, last_ts, run

    def _started_run(self) -> ProgressRun:
        if self.state.run is None:
            raise InvalidTransition("MetricsObserved before RunStarted: every run begins with RunStarted")
        return ProgressRun(self.state.progress)

    def result(self) -> TunerState:
        state = self._flushed()
        if self.last_seq != state.last_seq:
            state = self.state = replace(state, last_seq=self.last_seq, last_ts=self.last_ts)
        return state

    def _flushed(self) -> TunerState:
        if self._run is not None:
            self.state = replace(self.state, progress=self._run.result())
            self._run = None
        return self.state
