"""The worker: a long-lived training process that runs segments for the supervisor.

    python -m smart_tuner.trainer.worker --endpoint ipc:///…/workers.sock --worker-id w0 \\
        --dataset demo --preset demo --output-dir runs/<id>/trainer [--device cpu] [--threads 2]

It builds the trainer once (data, mels, model), announces itself with ``WorkerHello``
(its hyperparameters with type, range, default and class, its metrics, its device),
then runs ``RunSegment`` commands one after another in the same process: the
hyperparameters are applied in place (``HparamsApplied``), ``MetricsObserved`` is
streamed every ``report_every`` steps and at every validation, and the segment ends
with ``SegmentFinished`` (checkpoint path and sha256) or ``SegmentFailed`` (nan, oom,
aborted, error). ``AbortSegment`` is honoured between two steps; ``Shutdown`` ends the
process after the current step. A heartbeat goes out every ``--heartbeat-s`` seconds,
also while a segment trains (training runs in a thread; the event loop stays free).

Consumes: RunSegment, AbortSegment, Shutdown. Emits: WorkerHello, Heartbeat,
SegmentStarted, HparamsApplied, MetricsObserved, SegmentFinished, SegmentFailed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from ..protocol import messages as m
from ..protocol import metrics as mx
from .client import SupervisorClient, curve_of, new_context
from .config import TrainerConfig, resolve_corpus
from .corpus import CorpusError
from .distributed import Dist, Segment, follow
from .harness import SegmentError, Trainer
from .hparams import HParamError, announcement, parse_hparams_string, preset
from .inplace import Applied
from .logsetup import configure_logging
from .worker_loop import WorkerLoop, device_label

log = structlog.get_logger("worker")

METRICS = mx.WORKER_METRICS  # announced in WorkerHello


def environment(trainer: Trainer) -> dict[str, Any]:
    """What this worker's numbers depend on beyond the config: a run repeats itself bit for bit on one
    machine with one thread count, not across CPUs or thread counts (README, "How the default run decides")."""
    import platform

    import torch

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "dataset_id": trainer.data.dataset_id,
    }
    try:
        corpus = resolve_corpus(trainer.config)
        manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8")) if corpus.is_dir() else {}
        if isinstance(manifest, dict) and manifest.get("audio_sha256"):  # our generated corpora record theirs
            env["audio_sha256"] = manifest["audio_sha256"]
    except (OSError, ValueError, CorpusError):
        pass
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


class Worker(WorkerLoop):
    """Our trainer behind the worker protocol: segments train in a thread, hparams change in place."""

    def __init__(
        self, trainer: Trainer, client: SupervisorClient, heartbeat_s: float, parent: int | None = None
    ) -> None:
        super().__init__(client, heartbeat_s, parent)
        self.trainer = trainer

    def hello(self) -> m.WorkerHello:
        return m.WorkerHello(
            worker_id=self.client.worker_id,
            pid=os.getpid(),
            device=self.device,
            hparams=announcement(),
            metrics=METRICS,
            environment=environment(self.trainer),
        )

    @property
    def device(self) -> str:
        dist = self.trainer.dist
        return device_label(str(self.trainer.device), dist.world if dist is not None else 1)

    def progress(self) -> int | None:
        return self.trainer.step

    async def run_segment(self, cmd: m.RunSegment) -> None:
        loop = asyncio.get_running_loop()
        sid = cmd.segment_id
        await self.send(
            m.SegmentStarted(segment_id=sid, worker_id=self.client.worker_id, device=self.device, pid=os.getpid())
        )

        def report(step: int, metrics: dict[str, float]) -> None:
            msg = m.MetricsObserved(segment_id=sid, source="worker", step=step, metrics=metrics)
            loop.call_soon_threadsafe(self.offer, msg)

        def applied(a: Applied, step: int) -> None:
            msg = m.HparamsApplied(
                segment_id=sid, step=step, hparams=a.effective(), classes=dict(a.classes), apply_s=a.apply_s
            )
            loop.call_soon_threadsafe(self.offer, msg)

        try:
            if self.trainer.dist is not None:  # under torchrun: every rank trains this segment
                seg = Segment(
                    sid,
                    cmd.from_checkpoint,
                    cmd.from_sha256,
                    dict(cmd.hparams),
                    cmd.steps,
                    cmd.eval_every,
                    cmd.report_every,
                )
                result = await asyncio.to_thread(
                    self.trainer.dist.run_segment,
                    self.trainer,
                    seg,
                    report=report,
                    should_abort=self.abort.is_set,
                    on_applied=applied,
                )
                assert result is not None
            else:
                result = await asyncio.to_thread(
                    self.trainer.run_segment,
                    sid,
                    cmd.from_checkpoint,
                    cmd.from_sha256,
                    dict(cmd.hparams),
                    cmd.steps,
                    cmd.eval_every,
                    cmd.report_every,
                    report,
                    self.abort.is_set,
                    None,
                    applied,
                )
        except SegmentError as exc:
            await self.flush_reports()
            failed = m.SegmentFailed(
                segment_id=sid,
                reason=exc.reason,  # type: ignore[arg-type]
                detail=exc.detail,
                step=exc.step,
            )
            await self.send(failed)
        except Exception as exc:  # the loop boundary: any failure of a segment becomes an event
            log.error("segment failed", segment_id=sid, error=str(exc), traceback=traceback.format_exc())
            await self.flush_reports()
            await self.send(
                m.SegmentFailed(
                    segment_id=sid, reason="error", detail=f"{type(exc).__name__}: {exc}", step=self.trainer.step
                )
            )
        else:
            await self.flush_reports()
            await self.send(
                m.SegmentFinished(
                    segment_id=sid,
                    end_step=result.end_step,
                    metrics=result.metrics,
                    checkpoint=str(result.checkpoint),
                    checkpoint_sha256=result.sha256,
                    duration_s=result.duration_s,
                )
            )
        finally:
            await asyncio.to_thread(self.trainer.release_memory)  # the next trial starts from a clean cache


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m smart_tuner.trainer.worker", description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", required=True, help="the supervisor's worker endpoint (ipc:// or tcp://)")
    p.add_argument("--worker-id", required=True, help="this worker's id (its ZeroMQ routing id)")
    p.add_argument("--dataset", default="demo", help="demo, tiny, an LJSpeech folder or an NVIDIA filelist")
    p.add_argument("--preset", default="demo", help="starting hyperparameters: nvidia, demo or tiny")
    p.add_argument("--hparams", default="", help='overrides in NVIDIA\'s format, "name=value,…"')
    p.add_argument("--output-dir", type=Path, required=True, help="checkpoints and alignment images go here")
    p.add_argument("--data-dir", type=Path, help="where the demo/tiny corpora are made (default: the user cache)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--val-count", type=int, default=16, help="validation utterances")
    p.add_argument("--test-count", type=int, default=0, help="utterances held out of training and validation")
    p.add_argument("--heartbeat-s", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--log-file", type=Path, help="JSON log file")
    p.add_argument(
        "--parent-pid", type=int, help="the supervisor's pid: the worker stops when it is gone (0: started by hand)"
    )
    p.add_argument("--curve-server-key", help="CURVE: the coordinator's public key (Z85), for a tcp endpoint")
    p.add_argument(
        "--curve-key-file",
        type=Path,
        help="CURVE: this worker's secret certificate (run_tuner.py keys); its public key must be in "
        "the coordinator's bus.allow_keys",
    )
    return p


async def serve(args: argparse.Namespace) -> None:
    curve = curve_of(args)  # before the model is built: a bad key file fails at once
    hp = parse_hparams_string(args.hparams, preset(args.preset))
    device = args.device
    if "LOCAL_RANK" in os.environ:  # under torchrun: each rank on its own GPU of the lease
        import torch

        if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    config = TrainerConfig(
        dataset=args.dataset,
        output_dir=args.output_dir,
        data_dir=args.data_dir,
        device=device,
        threads=args.threads,
        val_count=args.val_count,
        test_count=args.test_count,
    )
    # under torchrun: rank 0 talks to the supervisor, the others follow it; nccl only between GPUs
    dist = Dist.from_env("nccl" if device.startswith("cuda") else "gloo")
    trainer = await asyncio.to_thread(Trainer, config, hp)
    trainer.dist = dist
    if dist is not None and dist.rank != 0:
        await asyncio.to_thread(follow, trainer, dist)
        return
    ctx = new_context()
    client = SupervisorClient(ctx, args.endpoint, args.worker_id, curve=curve)
    try:
        await Worker(trainer, client, args.heartbeat_s, parent=args.parent).run()
    finally:
        if dist is not None:
            await asyncio.to_thread(dist.broadcast, None)  # the followers stop too
        await client.aclose()
        ctx.term()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.parent = os.getppid() if args.parent_pid is None else (args.parent_pid or None)  # 0: none to watch
    configure_logging(args.log_file, "warning")
    structlog.contextvars.bind_contextvars(actor=f"worker:{args.worker_id}")
    try:
        asyncio.run(serve(args))
    except HParamError as exc:
        log.error("bad hyperparameters", error=str(exc))
        return 2
    except (ValueError, OSError) as exc:  # dataset, audio or checkpoint problems name the file themselves
        log.error("the trainer cannot start", error=str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
