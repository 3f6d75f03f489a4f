"""Every message type of Smart Tuner: events (past-tense facts, journaled), commands
(imperative, sent to workers, never journaled) and one signal (``Heartbeat``: a worker's
live fact about its connection, never journaled).

Field conventions: ids are strings; steps are global training steps; times are
Unix seconds (``*_ts``) or durations (``*_s``); ``hparams`` and ``metrics`` are
string-keyed maps; decision events (``decision=True``) carry ``reason`` (one
human sentence) and ``evidence`` (the numbers and rule or sampler output that
led to the decision). Adding a type is one decorated class here (and a reducer
in ``state.reducers``).

Imports the standard library and this package only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Literal

from .registry import Message, command, event, signal
from .schema import Json

Hparams = Mapping[str, Json]
Metrics = Mapping[str, float]
Evidence = Mapping[str, Json]
FailureReason = Literal["nan", "oom", "error", "aborted", "lost", "timeout"]
RunStatus = Literal["completed", "stopped", "failed"]
Severity = Literal["info", "warning", "error", "critical"]


# --- run lifecycle --------------------------------------------------------------


@event()
class RunStarted(Message):
    """A tuning run began. ``config`` is the validated config with ``${ENV}`` templates intact."""

    run_id: str
    config_hash: str
    config: Mapping[str, Json]
    strategy: str
    seed: int
    host: str
    pid: int
    version: str


@event()
class RunResumed(Message):
    """A coordinator took over an existing run's log after a stop or a crash."""

    run_id: str
    head_seq: int
    pid: int
    host: str
    truncated_bytes: int = 0


@event()
class StopRequested(Message):
    """An operator asked the run to stop (``stop`` command, SIGINT/SIGTERM, dashboard)."""

    source: str
    reason: str


@event(decision=True)
class StopDecided(Message):
    """The stop controller decided that the run is done."""

    rule: str
    reason: str
    evidence: Evidence


@event()
class RunFinished(Message):
    status: RunStatus
    reason: str
    summary: Mapping[str, Json] = field(default_factory=dict)


@event()
class ActorReady(Message):
    """An actor finished its setup and caught up with the log."""

    actor: str


@event()
class ActorCrashed(Message):
    """An actor raised; it was restarted unless ``gave_up`` is set."""

    actor: str
    error: str
    restarts: int
    gave_up: bool
    traceback: str = ""


@event()
class ProtocolViolation(Message):
    """Malformed input reached an edge; the sender's bytes were refused (counted, never fatal)."""

    where: str
    error: str
    count: int


# --- segments and trials ---------------------------------------------------------


@event(decision=True)
class SegmentScheduled(Message):
    """A plan: train ``steps`` steps from a checkpoint with ``hparams``."""

    segment_id: str
    trial_id: str | None
    from_checkpoint: str | None
    from_sha256: str | None
    start_step: int
    steps: int
    hparams: Hparams
    reason: str
    evidence: Evidence
    # The worker's cadence, decided by the scheduler (absent in logs written before it was recorded):
    report_every: int | None = None  # steps between MetricsObserved reports
    eval_every: int | None = None  # steps between validations inside the segment; 0: only at its end


@event()
class SegmentStarted(Message):
    segment_id: str
    worker_id: str
    device: str
    pid: int
    attempt: int = 1


@event()
class HparamsApplied(Message):
    """A worker applied hyperparameters in place; ``classes`` maps name -> hot/warm."""

    segment_id: str
    step: int
    hparams: Hparams
    classes: Mapping[str, str]
    apply_s: float


@event()
class MetricsObserved(Message):
    """Canonical metric values at a global step (``source``: worker, tensorboard, mlflow, stdout)."""

    segment_id: str | None
    source: str
    step: int
    metrics: Metrics


@event()
class SegmentFinished(Message):
    segment_id: str
    end_step: int
    metrics: Metrics
    checkpoint: str
    checkpoint_sha256: str
    duration_s: float


@event()
class SegmentFailed(Message):
    segment_id: str
    reason: FailureReason
    detail: str
    step: int | None = None


@event(decision=True)
class TrialProposed(Message):
    """The tuner asked its sampler for a candidate; the sampler's inputs and outputs are the evidence."""

    trial_id: str
    number: int
    hparams: Hparams
    sampler: str
    reason: str
    evidence: Evidence


@event(decision=True)
class RoundPlanned(Message):
    """A tuning round: ``trials`` race from one checkpoint over rungs of steps (successive halving).

    ``rung_steps[k]`` is how many steps every survivor trains in rung ``k``; ``keep[k]`` how
    many survive it. The last rung keeps one: the round's winner. A round of one trial and one
    rung is a plain training segment of the lineage. ``starts`` maps a trial to the finished
    segment whose checkpoint it starts from instead (a PBT generation: one start per member).
    """

    round: int
    trials: tuple[str, ...]
    from_checkpoint: str | None
    from_sha256: str | None
    start_step: int
    rung_steps: tuple[int, ...]
    keep: tuple[int, ...]
    reason: str
    evidence: Evidence
    starts: Mapping[str, str] = field(default_factory=dict)


@event(decision=True)
class TrialPruned(Message):
    trial_id: str
    step: int
    value: float | None
    reason: str
    evidence: Evidence


@event(decision=True)
class ChampionPromoted(Message):
    """A candidate replaced the champion, or (``kept=True``) the champion stood."""

    segment_id: str
    trial_id: str | None
    checkpoint: str
    checkpoint_sha256: str
    objective: float
    previous_objective: float | None
    step: int
    hparams: Hparams
    kept: bool
    reason: str
    evidence: Evidence


@event()
class ChampionTested(Message):
    """A champion measured on the run's test set, sentences no decision saw: teacher-forced and
    free-running (``fr_*``: stop by gate, length, MCD-DTW, attention). ``final``: the end-of-run
    measurement, with the listening samples in ``samples`` (a folder of WAVs); ``error`` says why
    a measurement failed (its ``metrics`` then empty)."""

    segment_id: str
    step: int
    checkpoint: str
    test_set: str
    n_sentences: int
    metrics: Metrics
    final: bool = False
    samples: str | None = None
    error: str | None = None
    elapsed_s: float = 0.0


# --- guard rails, rollbacks, alerts ----------------------------------------------------


@event(decision=True)
class GuardTripped(Message):
    """A guard rail saw a pathology; ``hparams`` are the changes it asks of every later segment,
    or, with ``trial_id``, of that trial's later segments only (a PBT member or a trial from
    scratch is a lineage of its own). ``gives_up``: the guard has no correction left (its tries
    spent, or the next one out of the trainer's range): the stop controller ends the run, naming
    the guard."""

    guard: str
    segment_id: str | None
    step: int | None
    action: str
    reason: str
    evidence: Evidence
    hparams: Hparams = field(default_factory=dict)
    gives_up: bool = False
    trial_id: str | None = None


@event(decision=True)
class RollbackPerformed(Message):
    """Training goes back to a good checkpoint; ``segment_id`` is the failed segment it replaces."""

    to_checkpoint: str
    to_sha256: str
    to_step: int
    hparams: Hparams
    reason: str
    evidence: Evidence
    segment_id: str | None = None


@event()
class AlertSent(Message):
    channel: str
    severity: Severity
    title: str
    dedup_key: str
    ok: bool
    error: str | None = None


# --- workers (ROUTER/DEALER, worker <-> supervisor) --------------------------------------


@event()
class WorkerHello(Message):
    """What a worker can do: hyperparameters (type, range, default, class), metrics, device;
    ``environment``: what its numbers depend on (torch version and threads, CPU, the data's id and
    audio hash), so two runs that disagree can be told apart from the log."""

    worker_id: str
    pid: int
    device: str
    hparams: Mapping[str, Json]
    metrics: tuple[str, ...]
    environment: Mapping[str, Json] = field(default_factory=dict)


@event()
class WorkerLost(Message):
    worker_id: str
    reason: str
    last_heartbeat_s: float


@signal()
class Heartbeat(Message):
    worker_id: str
    step: int | None = None


@command()
class RunSegment(Message):
    segment_id: str
    from_checkpoint: str | None
    from_sha256: str | None
    hparams: Hparams
    steps: int
    eval_every: int
    report_every: int


@command()
class AbortSegment(Message):
    segment_id: str
    reason: str


@command()
class Shutdown(Message):
    reason: str
