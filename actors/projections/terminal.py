"""The live terminal view of a running tuner: budget bar and ETA, the round's plan, each running
segment's step and loss, champion curve, recent decisions.

    view = LiveView(lambda: sequencer.state, budget_steps=600)
    view.start(); sequencer.on_commit(view.on_commit); ...; view.stop()

On a terminal it is a ``rich`` panel redrawn twice a second (log lines scroll above
it); elsewhere (a pipe, CI, a file) it prints one plain line per decision as it is
committed, which is also what ``tail`` shows, and a progress line (steps of the budget, ETA)
as each segment ends. Reads the committed state only.

Imports the standard library, rich, ``protocol``, ``state`` and the actors package.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ...protocol import Envelope
from ...protocol import messages as m
from ...protocol import metrics as mt
from ...state.model import TunerState
from ...state.queries import champion_curve, eta_s, phase_of, steps_spent

SPARK = "▁▂▃▄▅▆▇█"
SHOWN = (
    "RoundPlanned",
    "TrialPruned",
    "ChampionPromoted",
    "GuardTripped",
    "RollbackPerformed",
    "StopDecided",
    "WorkerLost",
    "RunFinished",
)


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in values)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def progress_line(state: TunerState, budget_steps: int | None) -> str:
    """Steps spent of the budget, the share and the ETA, on one plain line."""
    spent = steps_spent(state)
    if not budget_steps:
        return f"steps {spent} (no step budget)"
    share = min(1.0, spent / budget_steps)
    return f"steps {spent} of {budget_steps} ({share:.0%}), ETA {duration(eta_s(state, budget_steps))}"


def _bar(completed: float, total: float, label: str) -> Table:
    row = Table.grid(padding=(0, 1))
    row.add_column(width=32)
    row.add_column()
    row.add_row(ProgressBar(total=max(total, 1.0), completed=min(completed, total), width=30), label)
    return row


def render(
    state: TunerState, budget_steps: int | None, at: Mapping[str, tuple[int, float | None]] | None = None
) -> Panel:
    """The panel; ``at``: each running segment's last reported (step, training loss), from the feed."""
    curve = champion_curve(state)
    running = [s for s in state.tuning.segments.values() if s.status == "running"]
    champion = state.tuning.champion
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    spent = steps_spent(state)
    grid.add_row("phase", f"{state.control.phase} / training: {phase_of(curve[1:])}")
    label = progress_line(state, budget_steps) + f" (global step {state.progress.global_step})"
    grid.add_row("budget", _bar(spent, budget_steps, label) if budget_steps else Text(label))
    plans = [d for d in state.recent_decisions if d.type == "RoundPlanned"]
    if plans:
        grid.add_row("round", plans[-1].reason[:110])
    for seg in running[:4]:
        lr = seg.hparams.get("learning_rate")
        step, loss = (at or {}).get(seg.segment_id, (seg.start_step, None))
        done = max(0, step - seg.start_step)
        text = f"{seg.segment_id} ({seg.trial_id}" + (f", lr {lr:.3g}" if isinstance(lr, float) else "") + ")"
        text += f": step {done} of {seg.steps}" + (f", loss {loss:.4g}" if loss is not None else "")
        grid.add_row("segment", _bar(done, seg.steps, text))
    if champion is not None:
        grid.add_row("champion", f"{champion.objective:.4f} at step {champion.step} ({champion.segment_id})")
        grid.add_row("curve", sparkline([o for _, o, _ in curve]))
    decisions = Text()
    for d in state.recent_decisions[-8:]:
        decisions.append(f"#{d.seq} {d.type}: ", style="cyan")
        decisions.append(d.reason[:110] + "\n")
    title = f"Smart Tuner - {state.run.run_id}" if state.run else "Smart Tuner"
    return Panel(Group(grid, Text(""), decisions), title=title)


class LiveView:
    def __init__(self, state: Callable[[], TunerState], budget_steps: int | None, *, live: bool | None = None) -> None:
        self.state, self.budget_steps = state, budget_steps
        self.console = Console(stderr=True, highlight=False)
        self.live_mode = sys.stderr.isatty() if live is None else live
        self._live: Live | None = None
        self._at: dict[str, tuple[int, float | None]] = {}  # segment -> its last reported step and loss

    def start(self) -> None:
        if self.live_mode:
            self._live = Live(
                get_renderable=lambda: render(self.state(), self.budget_steps, self._at),
                console=self.console,
                refresh_per_second=2,
                transient=False,
            )
            self._live.start()

    def on_commit(self, env: Envelope) -> None:
        data = env.data
        if isinstance(data, m.MetricsObserved) and data.segment_id is not None:
            self._at[data.segment_id] = (data.step, data.metrics.get(mt.TRAIN_LOSS))
            return
        if isinstance(data, (m.SegmentFinished, m.SegmentFailed)):
            self._at.pop(data.segment_id, None)
        if self._live is not None:
            return
        if env.type in SHOWN:
            reason = getattr(env.data, "reason", "")
            self.console.print(f"  #{env.seq} {env.type}: {reason}", markup=False, soft_wrap=True)
        elif env.type == "SegmentFinished":  # plain output: where the run stands, once per segment
            line = progress_line(self.state(), self.budget_steps)
            self.console.print(f"  {line}", markup=False, soft_wrap=True)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
