"""The trainer supervisor: runs scheduled segments on worker processes and relays what they report.

    supervisor = Supervisor(SupervisorIO(server, pool, spec, client, run_dir))
    # under an ActorShell: react() hands each committed SegmentScheduled to the I/O side

Consumes: SegmentScheduled (run it), StopDecided (abort running segments, start nothing
new). On (re)start, ``resume`` hands over every segment the log shows scheduled or
running but not ended: a segment interrupted by a crash is run again under the same id
from the same checkpoint.

Emits: the workers' own events, relayed as they were proposed (WorkerHello,
SegmentStarted, HparamsApplied, MetricsObserved, SegmentFinished, SegmentFailed; what
has arrived is relayed in one ``propose_payloads`` round trip, up to
``SupervisorPolicy.relay_batch``, so a burst of reports lands in one group commit), and
its own WorkerLost (a worker silent for ``heartbeat_timeout_s`` or exited) and
SegmentFailed ``lost`` once a segment has lost ``max_attempts`` workers.

The I/O side owns one ROUTER (``WorkerServer``), the device pool (never more than
``n_gpus`` GPUs in use; a DDP trial, ``spec.ranks`` > 1, takes that many in one lease; the
CPU counts as one device) and the worker processes, each in a process group of its own
and killed as a group. A worker is kept between segments: hyperparameters change in
place, not by a restart. Behind CURVE (``accept_remote``) a worker started by hand on
another host joins with its hello: no process or lease of ours, lost like any other when
its heartbeats stop; a worker the supervisor does not know is told to stop.

The I/O side is ``io.SupervisorIO`` (re-exported here). Imports ``protocol``, ``state``
and the actors package only (never torch).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...protocol import Envelope
from ...protocol import messages as m
from ...state.model import TunerState
from ..runtime import ActorCore, Out
from .io import SupervisorIO, SupervisorPolicy

__all__ = ["Supervisor", "SupervisorIO", "SupervisorPolicy"]


class Supervisor(ActorCore):
    """See the module docstring: the decisions are trivial, the I/O side does the work."""

    name = "supervisor"

    def __init__(self, io: SupervisorIO) -> None:
        self.io = io

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        msg = env.data
        if isinstance(msg, m.SegmentScheduled):
            self.io.submit(state.tuning.segments[msg.segment_id])
        elif isinstance(msg, m.StopDecided):
            self.io.stop_all()
        return ()

    def resume(self, state: TunerState) -> Sequence[Out]:
        if state.control.stop is None and not state.tuning.workers:
            self.io.prestart = True  # nobody announced the trainer's hyperparameters yet
        self.io.number_workers_after(len(state.tuning.workers))  # ids stay unique across resumes
        if state.control.stop is None:
            for seg in sorted(state.tuning.segments.values(), key=lambda s: s.scheduled_seq):
                if seg.status in ("scheduled", "running"):
                    self.io.submit(seg)
        return ()

    async def setup(self) -> None:
        await self.io.start()

    async def teardown(self) -> None:
        await self.io.close()
