"""External mode: a user's own ``train.py`` behind the worker protocol, tuned by restarts.

    python -m smart_tuner.actors.external.worker --endpoint ipc:///…/workers.sock --worker-id w1 \\
        --output-dir runs/<id>/external --device cpu     # the spec comes in $SMART_TUNER_EXTERNAL

The supervisor starts this process where it would start ``trainer.worker``; to the rest
of the tuner it is a worker like the other (same messages, heartbeats, restarts). Each
``RunSegment`` becomes one run of the user's script:

1. a fresh folder ``<output-dir>/<segment_id>`` (a re-run moves the old one aside, never
   deletes it); the command template's placeholders are filled in, the hyperparameters
   rendered in the configured format (``render_hparams``: NVIDIA's ``--hparams`` string,
   separate flags, or a JSON/YAML file), typed by the script's declared values;
2. the script starts with argv (never a shell) in a process group of its own, its stdout
   and stderr in ``console.log``, ``PYTHONUNBUFFERED=1``; it gets SIGTERM if this process
   dies (``PR_SET_PDEATHSIG``), so a killed adapter leaves no training behind;
3. the log sources for this segment (the console log with the preset's line rules, the
   TensorBoard folder under the segment's output, the newest MLflow run started after it)
   are polled (every ``POLL_S[source]``: a console line costs a stat, an MLflow poll a
   query); what they read goes out as ``MetricsObserved`` on the
   script's own step axis;
4. once the script has logged the segment's last step and a checkpoint at or past it is
   complete (``Checkpoints``: a torch zip file whose every member checks, or a file that
   stopped changing), the script is stopped gracefully: SIGINT to its group, SIGTERM after
   ``sigint_timeout_s``, SIGKILL after ``sigterm_timeout_s``;
5. that checkpoint is checked again once the script has stopped (a script that re-saves on
   SIGINT, as Coqui does, may have been stopped mid-write): ``SegmentFinished`` carries it
   (path, sha256, step) and the metrics at it.
   Without a ``val_objective`` of its own, the ``objective`` metric (``val_loss``) stands
   in for it: the value the tuner compares.

It fails the segment with ``nan`` (a non-finite train loss or gradient norm was logged),
``oom`` (the script died saying it ran out of memory), ``timeout`` (no new step for
``hang_timeout_s``), ``aborted`` (``AbortSegment``) or ``error`` (it exited before the
segment's end, or saved no checkpoint within ``checkpoint_timeout_s`` after its last step:
the detail names the log's last lines).

The pieces it drives live beside it: ``hparams`` (the rendering), ``checkpoints`` (a
complete checkpoint), ``script`` (the script's command line and process). This module
holds the segment driving, the worker protocol's side of it and the command line
``main``; it imports them, the worker loop and the watcher's sources, and none of them
imports it. Never imports torch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ...protocol import messages as m
from ...protocol import metrics as mx
from ...state.config import ExternalConfig
from ...trainer.client import SupervisorClient, curve_of
from ...trainer.logsetup import configure_logging
from ...trainer.worker_loop import WorkerLoop, device_label
from ..bus.zmqbus import new_context
from ..supervisor.launcher import EXTERNAL_SPEC_ENV as SPEC_ENV
from ..watcher.console_source import STDOUT_RULES, LineRule, StdoutSource
from ..watcher.filetail import last_lines
from ..watcher.layouts import LAYOUTS, UserMapping
from ..watcher.source import MetricSource, Reading
from ..watcher.tensorboard_source import TensorBoardSource, tb_canonical
from .checkpoints import Checkpoints, sha256_of
from .hparams import ExternalError, merged_hparams, render_hparams
from .script import Script, build_argv

log = structlog.get_logger("external")

TICK_S = 0.05
POLL_S = {"stdout": 0.05, "tensorboard": 0.2, "mlflow": 0.25}  # bench/watcher_latency.py
OOM = re.compile(r"out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)
NONFINITE_GUARDED = (mx.TRAIN_LOSS, mx.GRAD_NORM)
METRICS = (
    mx.TRAIN_LOSS,
    mx.GRAD_NORM,
    mx.LEARNING_RATE,
    mx.VAL_LOSS,
    mx.VAL_OBJECTIVE,
    mx.DIAGONALITY,
    mx.VAL_MEL_LOSS,
    mx.VAL_GATE_LOSS,
    mx.VAL_GUIDED_ATTN_LOSS,
    mx.TRAIN_MEL_LOSS,
)


@dataclass
class _Run:
    """One segment's script, sources and what they have shown so far."""

    sid: str
    start_step: int
    target: int
    script: Script
    started: float
    sources: list[MetricSource]
    checkpoints: Checkpoints
    latest: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (step, value), step <= target
    polled: dict[str, float] = field(default_factory=dict)  # source -> when it was last polled
    held: list[tuple[str, Reading]] = field(default_factory=list)  # read past the target: sent once the end is known
    last_step: int | None = None
    last_progress: float = field(default_factory=time.monotonic)
    hparams: dict[str, Any] = field(default_factory=dict)  # what the script was given
    applied_sent: bool = False
    nonfinite: tuple[str, int, float] | None = None
    found: tuple[int, Path] | None = None  # the checkpoint that ends the segment
    damaged: Path | None = None  # the checkpoint found complete, then left incomplete by the script's stop


def objective_of(configured: str | None, preset: str) -> str:
    """What candidates are compared on without a ``val_objective`` of the script's own: the config's
    ``external.objective``, else the preset's (the unweighted mel loss where the trainer logs one)."""
    layout = LAYOUTS.get(preset)
    return configured or (layout.objective if layout is not None else mx.VAL_LOSS)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def thread_env(threads: int | None, env: Mapping[str, str]) -> dict[str, str]:
    """The script's environment: with ``threads`` (``trainer.threads``, per lease), the variables torch,
    MKL and OpenBLAS size their thread pools by, unless the config's ``external.env`` sets them itself
    (two scripts on two shared cores, each with a pool of both, ran steps ten times slower)."""
    out = dict(env)
    if threads:
        for name in THREAD_VARIABLES:
            out.setdefault(name, str(threads))
    return out


class ExternalWorker(WorkerLoop):
    def __init__(
        self,
        spec: ExternalConfig,
        client: SupervisorClient,
        output_dir: Path,
        device: str,
        heartbeat_s: float,
        run_dir: Path,
        parent: int | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(client, heartbeat_s, parent)
        self.threads = threads
        gpus = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        self.device = device_label(device, len(gpus) if device.startswith("cuda") else 1)
        self.spec, self.run_dir = spec, run_dir
        self.output_dir = output_dir.resolve()  # absolute: the script may run in another directory
        self.step: int | None = None
        self.preset = "nvidia_tacotron2" if spec.preset == "auto" else spec.preset
        self.terminating = False  # SIGTERM (the supervisor retiring us): stop the script, quickly, then exit

    def terminate(self) -> None:
        self.terminating = True
        self.request_stop()

    def hello(self) -> m.WorkerHello:
        hparams = {
            name: {
                "type": type(v).__name__,
                "default": v,
                "class": "restart",
                "low": None,
                "high": None,
                "doc": "the script's value (external.hparams); applied by a restart from a checkpoint",
            }
            for name, v in self.spec.hparams.items()
        }
        return m.WorkerHello(
            worker_id=self.client.worker_id, pid=os.getpid(), device=self.device, hparams=hparams, metrics=METRICS
        )

    def progress(self) -> int | None:
        return self.step

    # --- one segment ------------------------------------------------------------------------

    async def run_segment(self, cmd: m.RunSegment) -> None:
        sid = cmd.segment_id
        try:
            run = self._launch(cmd)
        except (ExternalError, OSError, ImportError) as exc:
            await self.send(m.SegmentFailed(segment_id=sid, reason="error", detail=str(exc)[:2000]))
            return
        try:
            await self.send(
                m.SegmentStarted(
                    segment_id=sid, worker_id=self.client.worker_id, device=self.device, pid=run.script.pid
                )
            )
            try:
                end = await self._follow(run)
            finally:
                sigint_s, sigterm_s = self.spec.sigint_timeout_s, self.spec.sigterm_timeout_s
                if self.terminating:  # the supervisor is stopping us: it waits seconds, not minutes
                    sigint_s, sigterm_s = min(sigint_s, 4.0), min(sigterm_s, 4.0)
                code = await run.script.stop(sigint_s, sigterm_s)
                self.step = None
            await self._read(run, final=True)  # what the writers flushed as they stopped
            await self._conclude(run, end, code)
        except Exception as exc:  # the loop boundary: any failure of a segment becomes an event
            log.error("segment failed", segment_id=sid, error=repr(exc), traceback=traceback.format_exc())
            await self.flush_reports()
            await self.send(m.SegmentFailed(segment_id=sid, reason="error", detail=f"{type(exc).__name__}: {exc}"))
        finally:
            await run.script.stop(1.0, 1.0)  # a no-op once it has exited; never leave it running
            for source in run.sources:
                with contextlib.suppress(Exception):
                    await source.close()

    def _launch(self, cmd: m.RunSegment) -> _Run:
        spec = self.spec
        folder = self.output_dir / cmd.segment_id
        if folder.exists():  # a re-run after a crash: keep what the last attempt left, aside
            k = 1
            while folder.with_name(f"{folder.name}.attempt-{k}").exists():
                k += 1
            folder.rename(folder.with_name(f"{folder.name}.attempt-{k}"))
        folder.mkdir(parents=True)
        checkpoints = self._checkpoints(folder)
        start = checkpoints.step_of(cmd.from_checkpoint) if cmd.from_checkpoint else 0
        if start is None:
            raise ExternalError(
                f"{cmd.from_checkpoint}: no step in its name (checkpoint_step {spec.checkpoint_step!r})"
            )
        values = merged_hparams(spec.hparams, cmd.hparams)
        file = folder / f"hparams.{spec.hparams_format}" if spec.hparams_format in ("json", "yaml") else None
        given = {spec.script_name(name): value for name, value in values.items()}  # the script's own names
        tokens = render_hparams(given, spec.hparams_format, spec.flag_prefix, file)
        fills = {
            "output_dir": str(folder),
            "segment_id": cmd.segment_id,
            "start_step": str(start),
            "run_dir": str(self.run_dir),
        }
        checkpoint = str(Path(cmd.from_checkpoint).resolve()) if cmd.from_checkpoint else None
        argv = build_argv(spec.argv(), fills, tokens, checkpoint)
        (folder / "command.json").write_text(json.dumps({"argv": argv, "hparams": values, "given": given}, indent=2))
        sources = self._sources(folder)  # first: a source that cannot be made must not leave a script running
        log.info("starting the script", segment_id=cmd.segment_id, argv=argv)
        script = Script.start(argv, folder / "console.log", thread_env(self.threads, spec.env), spec.cwd)
        return _Run(
            cmd.segment_id, start, start + cmd.steps, script, time.monotonic(), sources, checkpoints, hparams=values
        )

    def _checkpoints(self, folder: Path) -> Checkpoints:  # one per segment: it remembers what it saw
        return Checkpoints(folder, self.spec.checkpoint_glob, re.compile(self.spec.checkpoint_step))

    def _sources(self, folder: Path) -> list[MetricSource]:
        spec, sources = self.spec, list[MetricSource]()
        user = UserMapping.parse(spec.metrics)
        if spec.stdout:
            own = [LineRule(re.compile(p)) for p in spec.stdout_patterns]
            preset_rules = list(STDOUT_RULES.get(self.preset) or ())
            # no rules at all: the generic step=… name=value rule (StdoutSource's None)
            rules = [*own, *preset_rules] or None
            sources.append(StdoutSource(folder / "console.log", rules=rules))
        if spec.tensorboard_dir is not None:
            preset = LAYOUTS.get(spec.preset)
            fallback = tb_canonical if preset is None else preset.name_of
            sources.append(TensorBoardSource(folder / spec.tensorboard_dir, mapping=user.over(fallback)))
        if spec.mlflow_tracking_uri is not None:
            from ..watcher.mlflow_source import MlflowSource

            sources.append(
                MlflowSource(
                    spec.mlflow_tracking_uri,
                    experiment=spec.mlflow_experiment,
                    started_after_ms=int(time.time() * 1000),
                    mapping=user.name_of,
                )
            )
        return sources

    async def _follow(self, run: _Run) -> str:
        """Until the segment's end: 'done', 'nan', 'aborted', 'exited', 'timeout', 'no_checkpoint'."""
        reached_at: float | None = None
        while True:
            await self._read(run)
            if run.nonfinite is not None:
                return "nan"
            if self.abort.is_set():
                return "aborted"
            if run.last_step is not None and run.last_step >= run.target:
                reached_at = reached_at or time.monotonic()
                run.found = await asyncio.to_thread(run.checkpoints.first_complete, run.target)
                if run.found is not None:
                    return "done"
                if time.monotonic() - reached_at > self.spec.checkpoint_timeout_s:
                    return "no_checkpoint"
            if run.script.returncode is not None:
                return "exited"
            if time.monotonic() - run.last_progress > self.spec.hang_timeout_s:
                return "timeout"
            await asyncio.sleep(TICK_S)

    async def _read(self, run: _Run, final: bool = False) -> None:
        """Poll every source; a reading past the target is held until the checkpoint's step is known."""
        now = time.monotonic()
        for source in run.sources:
            if now - run.polled.get(source.name, -math.inf) < POLL_S.get(source.name, 0.2) - TICK_S / 2 and not final:
                continue
            run.polled[source.name] = now
            try:
                readings = await source.poll()
            except Exception as exc:  # a source's failure is logged; the others go on
                log.warning("metric source failed", source=source.name, error=repr(exc))
                continue
            for r in readings:
                if r.step > run.target:  # progress (and the target reached), reported once the end is known
                    run.held.append((source.name, r))
                    self._progress(run, r.step)
                    continue
                self._observe(run, source.name, r)

    def _progress(self, run: _Run, step: int) -> None:
        if run.last_step is None or step > run.last_step:
            run.last_step, run.last_progress = step, time.monotonic()
            self.step = step

    def _observe(self, run: _Run, source: str, r: Reading) -> None:
        metrics = {k: float(v) for k, v in r.metrics.items()}
        if not metrics:
            return
        self._progress(run, r.step)
        for name in NONFINITE_GUARDED:
            if name in metrics and not math.isfinite(metrics[name]) and run.nonfinite is None:
                run.nonfinite = (name, r.step, metrics[name])
        for name, value in metrics.items():
            if r.step >= run.latest.get(name, (-1, 0.0))[0]:
                run.latest[name] = (r.step, value)
        if not run.applied_sent:
            run.applied_sent = True
            self.offer(
                m.HparamsApplied(
                    segment_id=run.sid,
                    step=run.start_step,
                    hparams=run.hparams,
                    classes=dict.fromkeys(run.hparams, "restart"),
                    apply_s=round(time.monotonic() - run.started, 3),
                )
            )
        self.offer(m.MetricsObserved(segment_id=run.sid, source=source, step=r.step, metrics=metrics))

    async def _conclude(self, run: _Run, end: str, code: int) -> None:
        sid, spec = run.sid, self.spec
        found = run.found
        if end == "exited":  # it ended by itself: what it saved is all it will write
            found = await asyncio.to_thread(run.checkpoints.first_complete, run.target, True)
        if found is not None and not await asyncio.to_thread(run.checkpoints.complete, found[1], True):
            # it was complete when the script was asked to stop: the script rewrote it as it stopped (Coqui
            # re-saves on SIGINT, in place) and was stopped mid-write. Another complete one, or a failure.
            damaged = found[1]
            found = await asyncio.to_thread(run.checkpoints.first_complete, run.target, True)
            if found is None:
                end = "damaged"
                log.warning("checkpoint damaged as the script stopped", segment_id=sid, checkpoint=str(damaged))
                run.damaged = damaged
        if found is not None:
            for source, r in sorted(run.held, key=lambda sr: sr[1].step):  # past the target, up to the checkpoint
                if r.step <= found[0]:
                    self._observe(run, source, r)
            if run.nonfinite is not None:  # a NaN between the target and the checkpoint: not a good end
                end, found = "nan", None
        await self.flush_reports()
        tail = last_lines(self.output_dir / sid / "console.log", 8, "(no console log)")
        if end == "nan" and run.nonfinite is not None:
            name, step_at, value = run.nonfinite
            await self._fail(sid, "nan", f"{name} was {value} at step {step_at}", step_at)
        elif end == "aborted":
            await self._fail(sid, "aborted", "aborted by the supervisor", run.last_step)
        elif end == "timeout":
            await self._fail(
                sid, "timeout", f"no new step for {spec.hang_timeout_s:g} s; last lines: {tail}", run.last_step
            )
        elif end == "damaged":
            await self._fail(
                sid,
                "error",
                f"the checkpoint {run.damaged} was complete when the script was asked to stop, and was not "
                "afterwards: the script rewrote it as it stopped (saving on interrupt?) and was stopped mid-write; "
                f"no other complete {spec.checkpoint_glob!r} at step >= {run.target}",
                run.last_step,
            )
        elif found is None and end == "no_checkpoint":
            await self._fail(
                sid,
                "error",
                f"no complete {spec.checkpoint_glob!r} at step >= {run.target} within "
                f"{spec.checkpoint_timeout_s:g} s of reaching it: does the script save at the "
                "segment ends (its checkpoint interval must divide the segment lengths)?",
                run.last_step,
            )
        elif found is None:
            why = "ran out of memory" if OOM.search(tail) else f"exited with code {code}"
            reason: m.FailureReason = "oom" if OOM.search(tail) else "error"
            await self._fail(
                sid,
                reason,
                f"the script {why} at step {run.last_step} before step {run.target}; last lines: {tail}",
                run.last_step,
            )
        else:
            step, path = found
            await self._finish(run, step, path)

    async def _finish(self, run: _Run, step: int, path: Path) -> None:
        metrics = {name: value for name, (_, value) in run.latest.items()}
        objective = objective_of(self.spec.objective, self.preset)
        if mx.VAL_OBJECTIVE not in metrics:
            if objective not in metrics:
                await self._fail(
                    run.sid,
                    "error",
                    f"the script logged no {objective} (external.objective, or its preset's) by step "
                    f"{step}: nothing to compare candidates on",
                    step,
                )
                return
            metrics[mx.VAL_OBJECTIVE] = metrics[objective]
        sha = await asyncio.to_thread(sha256_of, path)
        took = round(time.monotonic() - run.started, 3)
        await self.send(
            m.SegmentFinished(
                segment_id=run.sid,
                end_step=step,
                metrics=metrics,
                checkpoint=str(path),
                checkpoint_sha256=sha,
                duration_s=took,
            )
        )
        log.info(
            "segment finished",
            segment_id=run.sid,
            step=step,
            checkpoint=str(path),
            stopped_by=run.script.stopped_by or "its own exit",
        )

    async def _fail(self, sid: str, reason: m.FailureReason, detail: str, step: int | None) -> None:
        log.warning("segment failed", segment_id=sid, reason=reason, detail=detail)
        await self.send(m.SegmentFailed(segment_id=sid, reason=reason, detail=detail[:2000], step=step))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m smart_tuner.actors.external.worker", description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", required=True, help="the supervisor's worker endpoint (ipc:// or tcp://)")
    p.add_argument("--worker-id", required=True, help="this worker's id (its ZeroMQ routing id)")
    p.add_argument("--output-dir", type=Path, required=True, help="one folder per segment goes here")
    p.add_argument("--run-dir", type=Path, help="the run's folder (the {run_dir} placeholder)")
    p.add_argument("--device", default="cpu", help="what the lease gave (the script sees CUDA_VISIBLE_DEVICES)")
    p.add_argument("--heartbeat-s", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument(
        "--threads", type=int, default=None, help="the script's CPU threads (trainer.threads): OMP_NUM_THREADS and kin"
    )
    p.add_argument("--log-file", type=Path, help="JSON log file")
    p.add_argument("--parent-pid", type=int, help="the supervisor's pid: stop when it is gone (0: started by hand)")
    p.add_argument("--curve-server-key", help="CURVE: the coordinator's public key (Z85), for a tcp endpoint")
    p.add_argument("--curve-key-file", type=Path, help="CURVE: this worker's secret certificate")
    return p


async def serve(args: argparse.Namespace, spec: ExternalConfig) -> None:
    curve = curve_of(args)
    ctx = new_context()
    client = SupervisorClient(ctx, args.endpoint, args.worker_id, curve=curve)
    try:
        run_dir = args.run_dir or args.output_dir.parent
        worker = ExternalWorker(
            spec,
            client,
            args.output_dir,
            args.device,
            args.heartbeat_s,
            run_dir,
            parent=args.parent,
            threads=args.threads,
        )
        # SIGTERM stops the script gracefully first: its own group is not ours, so the supervisor's
        # group kill does not reach it (and PR_SET_PDEATHSIG only reaches the script, not its children)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.terminate)
        await worker.run()
    finally:
        await client.aclose()
        ctx.term()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.parent = os.getppid() if args.parent_pid is None else (args.parent_pid or None)  # 0: none to watch
    configure_logging(args.log_file, "info")
    structlog.contextvars.bind_contextvars(actor=f"external:{args.worker_id}")
    raw = os.environ.get(SPEC_ENV)
    if not raw:
        log.error(f"${SPEC_ENV} is not set: the external section of the config comes in it")
        return 2
    try:
        spec = ExternalConfig.model_validate_json(raw)
    except ValueError as exc:
        log.error(f"${SPEC_ENV} is not a valid external section", error=str(exc))
        return 2
    try:
        asyncio.run(serve(args, spec))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
