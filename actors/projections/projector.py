"""The projector: the actor that writes the run as MLflow, TensorBoard and Optuna show it.

    Projector(run_dir)      # an actor core; writes in a thread of its own

Segment plans themselves (which checkpoint, which hyperparameters, how many steps, and
the names ``r<round>-t<trial>-g<rung>``) are made by the tuner's strategy and recorded
as ``SegmentScheduled``; this actor turns the log into what people browse:

* MLflow (``mlflow.db`` in the run directory, one experiment ``smart-tuner``): one
  parent run per tuning run; one child run per segment with its hyperparameters as
  params, its metrics on the global step, the alignment image, and tags ``fork_of``
  (the segment whose checkpoint it started from), ``trial``, ``round``, ``decision``
  (why it was scheduled), ``pruned``, ``promoted``. Nothing is ever deleted; the
  parent run gets the champion's curve and, at the end, the summary and the best
  checkpoint's path.
* TensorBoard (``tensorboard/`` in the run directory): ``segments/<id>`` per segment,
  ``champion`` for the lineage on the global step (written as each round is decided),
  alignment images, and each segment's hyperparameters as text.
* Optuna (``optuna_storage`` in the config, optional): the run as a study in that
  storage for optuna-dashboard (``optuna_mirror``), brought up to date as each round is
  decided and after a restart.

Consumes: RunStarted, SegmentScheduled, MetricsObserved, SegmentFinished,
SegmentFailed, TrialPruned, ChampionPromoted, RunFinished (and the state, for the
Optuna mirror). Emits nothing.

A projection is rebuilt from the log: the writer keeps a cursor (the last seq it
wrote, in ``projections.cursor``) and skips what it already wrote after a restart;
child runs are found again by their ``smart_tuner.segment_id`` tag, so a crash between
writing a run and the cursor never makes a duplicate. A slow or failing MLflow store
never blocks the run: writes happen in a thread behind a bounded queue, and an error
is logged, never raised into the event loop.

MLflow and TensorBoard are imported in the writer thread only (``import mlflow`` costs
a second or more); the coordinator's own imports stay small.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from ...protocol import Envelope
from ...protocol import messages as m
from ...state.model import TunerState
from ..runtime import ActorCore, Out
from .optuna_mirror import OptunaMirror

log = structlog.get_logger("projector")

QUEUE_LIMIT = 100_000  # events waiting for the writer; at ~10 events/s per worker this is hours of backlog
EXPERIMENT = "smart-tuner"
PROJECTED = (
    m.RunStarted,
    m.SegmentScheduled,
    m.MetricsObserved,
    m.SegmentFinished,
    m.SegmentFailed,
    m.TrialPruned,
    m.ChampionPromoted,
    m.ChampionTested,
    m.RunFinished,
)


class Projector(ActorCore):
    name = "projector"
    replays_history = True
    follows_tail = True  # RunFinished, the summary, may be committed after the last event this actor received

    def __init__(self, run_dir: Path, optuna_storage: str | None = None) -> None:
        self.run_dir = run_dir
        self.optuna_storage = optuna_storage
        # (event, None): project the event; (cause or None, state): bring the Optuna mirror up to date
        self.queue: queue.Queue[tuple[Envelope | None, TunerState | None] | None] = queue.Queue(QUEUE_LIMIT)
        self.cursor_path = run_dir / "projections.cursor"
        self.cursor = _read_cursor(self.cursor_path)
        self.dropped = 0
        self._thread: threading.Thread | None = None

    def observe(self, env: Envelope) -> None:
        if env.seq <= self.cursor or not isinstance(env.data, PROJECTED):
            return
        self.cursor = env.seq
        try:
            self.queue.put_nowait((env, None))
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 100, 10_000):
                log.warning("projection queue full: events not projected", dropped=self.dropped)

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        if self.optuna_storage is not None and isinstance(env.data, m.ChampionPromoted | m.RunFinished):
            self._mirror(env, state)  # a round was decided: its trials are final
        return ()

    def resume(self, state: TunerState) -> Sequence[Out]:
        if self.optuna_storage is not None and state.run is not None:
            self._mirror(None, state)  # what a crash kept from the mirror
        return ()

    def _mirror(self, env: Envelope | None, state: TunerState) -> None:
        try:
            self.queue.put_nowait((env, state))
        except queue.Full:
            self.dropped += 1

    async def setup(self) -> None:
        writer = _Writer(self.run_dir, self.cursor_path, self.optuna_storage)
        self._thread = threading.Thread(target=writer.run, args=(self.queue,), name="projections", daemon=True)
        self._thread.start()

    async def teardown(self) -> None:
        if self._thread is None:
            return
        self.queue.put(None)
        import asyncio

        await asyncio.to_thread(self._thread.join, 60.0)
        self._thread = None


def _read_cursor(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


class _Writer:
    """Runs in the projections thread: every MLflow and TensorBoard call happens here."""

    def __init__(self, run_dir: Path, cursor_path: Path, optuna_storage: str | None = None) -> None:
        self.run_dir, self.cursor_path = run_dir, cursor_path
        self.mirror = OptunaMirror(optuna_storage) if optuna_storage else None
        self.client: Any = None
        self.parent: str | None = None
        self.children: dict[str, str] = {}
        self.segments: dict[str, m.SegmentScheduled] = {}
        self.checkpoint_of: dict[str, str] = {}  # checkpoint path -> segment that wrote it
        self.tb: Any = None
        self.experiment = ""
        self.last_seq = 0
        self.written_at = 0.0

    def run(self, q: queue.Queue[tuple[Envelope | None, TunerState | None] | None]) -> None:
        try:
            self._open()
        except Exception as exc:  # a broken store must not take the run down: say so once and drain
            log.error("MLflow store unavailable; the run goes on without it", error=repr(exc))
            self.client = None
        while True:
            item = q.get()
            if item is None:
                break
            env, state = item
            if state is not None:
                self._sync_mirror(state)
                continue
            assert env is not None
            try:
                self._project(env)
            except Exception as exc:  # the projection's loop boundary: log, keep going
                log.warning("projection failed", type=env.type, seq=env.seq, error=repr(exc))
            self.last_seq = env.seq
            if time.monotonic() - self.written_at > 1.0:
                self._save_cursor()
        self._save_cursor()
        if self.tb is not None:
            self.tb.close()

    def _sync_mirror(self, state: TunerState) -> None:
        if self.mirror is None:
            return
        try:
            self.mirror.sync(state)
        except Exception as exc:  # an unreachable Optuna storage costs the mirror, never the run
            log.warning("Optuna storage mirror failed", error=repr(exc))
            self.mirror.study = None  # open it again next time

    def _save_cursor(self) -> None:
        tmp = self.cursor_path.with_suffix(".tmp")
        tmp.write_text(f"{self.last_seq}\n")
        os.replace(tmp, self.cursor_path)
        self.written_at = time.monotonic()

    def _open(self) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its schema-migration chatter is not ours to print

        from .tensorboard_writer import TensorBoardWriter

        self.tb = TensorBoardWriter(self.run_dir / "tensorboard")
        db = (self.run_dir / "mlflow.db").resolve()
        if not db.exists():
            # A fresh store takes seconds of schema migrations; a crash in the middle would leave a
            # half-made database that MLflow cannot open again. Make it aside, then rename it in place.
            fresh = db.with_name("mlflow.db.creating")
            fresh.unlink(missing_ok=True)
            MlflowClient(tracking_uri=f"sqlite:///{fresh}").search_experiments()
            os.replace(fresh, db)
        self.client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        artifacts = (self.run_dir / "mlartifacts").resolve().as_uri()  # never ./mlruns in the user's cwd
        self.experiment = exp.experiment_id if exp is not None else self.client.create_experiment(EXPERIMENT, artifacts)
        self._find_parent(self.run_dir.name)  # after a restart RunStarted is behind the cursor

    # --- one event --------------------------------------------------------------------------

    def _project(self, env: Envelope) -> None:
        msg = env.data
        if isinstance(msg, m.SegmentScheduled):
            self.segments[msg.segment_id] = msg
        elif isinstance(msg, m.SegmentFinished):
            self.checkpoint_of[msg.checkpoint] = msg.segment_id
        if self.tb is not None:
            self.tb.project(env, self.segments)
        if self.client is None:
            return
        if isinstance(msg, m.RunStarted):
            self._parent(msg.run_id, msg)
        elif isinstance(msg, m.SegmentScheduled):
            self._child(msg)
        elif isinstance(msg, m.MetricsObserved) and msg.segment_id is not None:
            self._metrics(self._child_id(msg.segment_id), msg.step, msg.metrics, env.ts)
        elif isinstance(msg, m.SegmentFinished):
            run_id = self._child_id(msg.segment_id)
            if run_id is not None:
                self._metrics(run_id, msg.end_step, msg.metrics, env.ts)
                png = Path(msg.checkpoint).with_suffix(".alignment.png")
                if png.is_file():
                    self.client.log_artifact(run_id, str(png), "alignment")
                self.client.set_terminated(run_id, "FINISHED", end_time=int(env.ts * 1000))
        elif isinstance(msg, m.SegmentFailed):
            run_id = self._child_id(msg.segment_id)
            if run_id is not None:
                self.client.set_tag(run_id, "failure", f"{msg.reason}: {msg.detail[:200]}")
                self.client.set_terminated(run_id, "FAILED", end_time=int(env.ts * 1000))
        elif isinstance(msg, m.TrialPruned):
            for sid, seg in self.segments.items():
                if seg.trial_id == msg.trial_id and (run_id := self._child_id(sid)) is not None:
                    self.client.set_tag(run_id, "pruned", "true")
                    self.client.set_tag(run_id, "pruned_reason", msg.reason[:500])
        elif isinstance(msg, m.ChampionPromoted):
            self._promoted(msg, env.ts)
        elif isinstance(msg, m.ChampionTested):
            self._tested(msg, env.ts)
        elif isinstance(msg, m.RunFinished) and self.parent is not None:
            for k, v in msg.summary.items():
                self.client.set_tag(self.parent, f"summary.{k}", str(v)[:500])
            self.client.set_tag(self.parent, "finish_reason", msg.reason[:500])
            status = "FINISHED" if msg.status == "completed" else ("KILLED" if msg.status == "stopped" else "FAILED")
            self.client.set_terminated(self.parent, status, end_time=int(env.ts * 1000))

    def _find_parent(self, run_id: str) -> None:
        found = self.client.search_runs(
            [self.experiment], f"tags.`smart_tuner.run_id` = '{run_id}' and tags.`smart_tuner.kind` = 'parent'"
        )
        if found:
            self.parent = found[0].info.run_id

    def _parent(self, run_id: str, msg: m.RunStarted) -> None:
        self._find_parent(run_id)
        if self.parent is not None:
            return
        run = self.client.create_run(
            self.experiment,
            run_name=run_id,
            tags={
                "smart_tuner.run_id": run_id,
                "smart_tuner.kind": "parent",
                "strategy": msg.strategy,
                "config_hash": msg.config_hash,
            },
        )
        self.parent = run.info.run_id
        self.client.log_param(self.parent, "seed", msg.seed)

    def _child_id(self, segment_id: str) -> str | None:
        if segment_id in self.children:
            return self.children[segment_id]
        if self.parent is None:
            return None
        found = self.client.search_runs(
            [self.experiment],
            f"tags.`smart_tuner.segment_id` = '{segment_id}' and tags.`mlflow.parentRunId` = '{self.parent}'",
        )
        if found:
            self.children[segment_id] = found[0].info.run_id
            return self.children[segment_id]
        return None

    def _child(self, seg: m.SegmentScheduled) -> None:
        if self.parent is None or self._child_id(seg.segment_id) is not None:
            return  # no parent (store unavailable at start), or already written before a restart
        fork_of = self.checkpoint_of.get(seg.from_checkpoint or "", "scratch" if seg.from_checkpoint is None else "")
        tags = {
            "mlflow.parentRunId": self.parent,
            "smart_tuner.segment_id": seg.segment_id,
            "trial": seg.trial_id or "",
            "fork_of": fork_of or seg.from_checkpoint or "",
            "round": str(seg.evidence.get("round", "")),
            "rung": str(seg.evidence.get("rung", "")),
            "decision": seg.reason[:500],
            "pruned": "false",
            "start_step": str(seg.start_step),
        }
        run = self.client.create_run(self.experiment, run_name=seg.segment_id, tags=tags)
        self.children[seg.segment_id] = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, str(v)[:500]) for k, v in sorted(seg.hparams.items())]
        params.append(Param("steps", str(seg.steps)))
        self.client.log_batch(run.info.run_id, params=params)

    def _metrics(self, run_id: str | None, step: int, metrics: Mapping[str, float], ts: float) -> None:
        if run_id is None:
            return
        from mlflow.entities import Metric

        batch = [Metric(k, float(v), int(ts * 1000), step) for k, v in metrics.items() if _finite(v)]
        for i in range(0, len(batch), 1000):  # log_batch takes at most 1000 metrics
            self.client.log_batch(run_id, metrics=batch[i : i + 1000])

    def _promoted(self, msg: m.ChampionPromoted, ts: float) -> None:
        run_id = self._child_id(msg.segment_id)
        if run_id is not None:
            self.client.set_tag(run_id, "promoted", "kept" if msg.kept else "promoted")
            self.client.set_tag(run_id, "promotion_reason", msg.reason[:500])
        if self.parent is not None:
            self._metrics(self.parent, msg.step, {"champion_objective": msg.objective}, ts)
            self.client.set_tag(self.parent, "champion_checkpoint", msg.checkpoint)

    def _tested(self, msg: m.ChampionTested, ts: float) -> None:
        """The test metrics as ``test_<name>`` on the champion's segment run and, along the champion's
        steps, on the parent; the final measurement's listening samples as the parent's ``samples/``."""
        values = {f"test_{k}": v for k, v in msg.metrics.items()}
        self._metrics(self._child_id(msg.segment_id), msg.step, values, ts)
        if self.parent is None:
            return
        self._metrics(self.parent, msg.step, values, ts)
        if msg.error is not None:
            self.client.set_tag(self.parent, "test_error", msg.error[:500])
        if msg.final and msg.samples and Path(msg.samples).is_dir():
            self.client.log_artifacts(self.parent, msg.samples, "samples")


def _finite(v: float) -> bool:
    with contextlib.suppress(TypeError, ValueError):
        return float(v) == float(v) and abs(float(v)) != float("inf")
    return False
