"""The tuner's state: frozen dataclasses, folded from the event log.

The state is grouped into sections (``run``, ``control``, ``tuning``,
``health``, ``progress``) so that a frequent event rebuilds only the small
section it touches: a metric event replaces ``progress`` and the two counters
at the top, never the segment book. Containers are never mutated after
construction; reducers build new ones.

Imports the standard library and ``protocol`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..protocol import Json
from .serde import WRITTEN_WHEN_SET

STATE_SCHEMA = 3  # bump when the shape changes; snapshots of another schema are ignored

Phase = Literal["new", "running", "stopping", "finished"]
SegmentStatus = Literal["scheduled", "running", "finished", "failed"]
TrialStatus = Literal["proposed", "running", "pruned", "evaluated"]
RECENT_DECISIONS = 50  # decisions kept in the state for `status`; the log keeps all of them


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    run_id: str
    config_hash: str
    strategy: str
    seed: int
    version: str
    host: str
    pid: int
    started_ts: float
    config: Mapping[str, Json]
    paused_s: float = field(default=0.0, metadata=WRITTEN_WHEN_SET)  # no coordinator: from the last event to a resume


@dataclass(frozen=True, slots=True, kw_only=True)
class StopInfo:
    seq: int
    rule: str
    reason: str
    evidence: Mapping[str, Json]


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRequest:
    seq: int
    source: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Control:
    phase: Phase = "new"
    status: str | None = None
    finish_reason: str | None = None
    finished_ts: float | None = None
    resumes: int = 0
    stop_requests: tuple[StopRequest, ...] = ()
    stop: StopInfo | None = None
    ready_actors: tuple[str, ...] = ()
    summary: Mapping[str, Json] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    segment_id: str
    trial_id: str | None
    status: SegmentStatus
    from_checkpoint: str | None
    from_sha256: str | None
    start_step: int
    steps: int
    hparams: Mapping[str, Json]
    reason: str
    scheduled_seq: int
    worker_id: str | None = None
    device: str | None = None
    attempts: int = 0
    last_step: int | None = None
    end_step: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    duration_s: float | None = None
    failure: str | None = None
    failure_detail: str | None = None
    applied: Mapping[str, Json] = field(default_factory=dict)
    rollback: Mapping[str, Json] | None = None  # once failed: the hparams a rollback re-runs it with
    report_every: int | None = field(default=None, metadata=WRITTEN_WHEN_SET)  # as SegmentScheduled has them
    eval_every: int | None = field(default=None, metadata=WRITTEN_WHEN_SET)


@dataclass(frozen=True, slots=True, kw_only=True)
class Trial:
    trial_id: str
    number: int
    hparams: Mapping[str, Json]
    sampler: str
    status: TrialStatus
    proposed_seq: int
    value: float | None = None
    pruned_step: int | None = None
    # the guard rails' changes for this trial alone (GuardTripped with its trial_id), over ``hparams``
    adjustments: Mapping[str, Json] = field(default_factory=dict, metadata=WRITTEN_WHEN_SET)

    def effective_hparams(self) -> dict[str, Json]:
        """What the trial trains with: its proposal and the guard rails' changes for it."""
        return {**self.hparams, **self.adjustments}


@dataclass(frozen=True, slots=True, kw_only=True)
class Champion:
    segment_id: str
    trial_id: str | None
    checkpoint: str
    checkpoint_sha256: str
    objective: float
    step: int
    hparams: Mapping[str, Json]
    promoted_seq: int
    kept_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Round:
    """A race of ``trials`` from one checkpoint over rungs of steps; ``winner`` once decided."""

    round: int
    trials: tuple[str, ...]
    from_checkpoint: str | None
    from_sha256: str | None
    start_step: int
    rung_steps: tuple[int, ...]
    keep: tuple[int, ...]
    planned_seq: int
    winner: str | None = None
    starts: Mapping[str, str] = field(default_factory=dict)  # trial -> the finished segment it starts from


@dataclass(frozen=True, slots=True, kw_only=True)
class Worker:
    worker_id: str
    pid: int
    device: str
    status: Literal["connected", "lost"]
    hparams: Mapping[str, Json]
    metrics: tuple[str, ...]
    lost_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChampionTest:
    """A champion measured on the test set (``ChampionTested``); ``final``: the end-of-run one."""

    seq: int
    segment_id: str
    step: int
    test_set: str
    n_sentences: int
    metrics: Mapping[str, float]
    final: bool = False
    samples: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Tuning:
    segments: Mapping[str, Segment] = field(default_factory=dict)
    trials: Mapping[str, Trial] = field(default_factory=dict)
    champion: Champion | None = None
    promotions: int = 0
    rounds: tuple[Round, ...] = ()
    adjustments: Mapping[str, Json] = field(default_factory=dict)  # hparams the guard rails asked for
    workers: Mapping[str, Worker] = field(default_factory=dict)
    tests: tuple[ChampionTest, ...] = field(default=(), metadata=WRITTEN_WHEN_SET)  # champions on the test set


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """A guard trip, rollback, actor crash or alert, as recorded for the status view."""

    seq: int
    kind: str
    subject: str
    detail: str
    gave_up: bool = field(default=False, metadata=WRITTEN_WHEN_SET)  # a guard with no correction left
    trial_id: str | None = field(default=None, metadata=WRITTEN_WHEN_SET)  # a guard's trip on one trial alone


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    guards: tuple[Incident, ...] = ()
    rollbacks: tuple[Incident, ...] = ()
    crashes: tuple[Incident, ...] = ()
    alerts_sent: int = 0
    alerts_failed: int = 0
    protocol_violations: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    global_step: int = 0
    metrics_observed: int = 0
    last_metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    seq: int
    ts: float
    type: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TunerState:
    schema: int = STATE_SCHEMA
    last_seq: int = 0
    last_ts: float | None = None
    run: RunInfo | None = None
    control: Control = field(default_factory=Control)
    tuning: Tuning = field(default_factory=Tuning)
    health: Health = field(default_factory=Health)
    progress: Progress = field(default_factory=Progress)
    recent_decisions: tuple[Decision, ...] = ()
