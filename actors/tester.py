"""The tester: each new champion measured on the run's test set, and the end-of-run listening samples.

    tester = ChampionTester(ChampionTesterIO(client, run_dir, held_out_set(config)))  # None: no test set

Consumes: ``ChampionPromoted`` (measure the new champion's checkpoint), ``StopDecided`` (the
end-of-run measurement of the final champion, with its listening samples). On (re)start,
``resume`` asks for the end-of-run measurement when the stop is decided and it is missing.

Emits: ``ChampionTested`` (cause: the promotion or the stop), with the test metrics or the
``error`` that kept it from them. The lifecycle waits for the final one before it records
``RunFinished`` (``final_test_due``), so the end-of-run summary, MLflow and TensorBoard have it.

The test set is sentences no decision saw: ``trainer.test_dataset``, or ``trainer.test_count``
utterances the trainer held out of ``trainer.dataset``, or the demo corpus's own sixteen test
sentences for dataset ``demo``; nothing for external mode (no model of ours to ask). The
measuring runs ``python -m smart_tuner.trainer.heldout`` in a process of its own (the
coordinator never loads torch), one at a time; a promotion that arrives while one is measured
replaces any still waiting (only the latest champion is worth measuring), and the final
measurement replaces them all. Metrics files go to ``tests/<segment>.json``; the final
measurement's WAVs, ``samples.json`` and ``test_metrics.json`` to ``samples/``.

On the CPU the measurement shares the cores with training (about ten CPU seconds for the demo
model's sixteen sentences, a few per cent of a 150-step segment). Imports asyncio, the standard
library, ``protocol``, ``state`` and the actors package only (never torch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..protocol import Envelope, encode
from ..protocol import messages as m
from ..state.config import TunerConfig
from ..state.model import TunerState
from ..state.queries import final_test_due
from .bus import BusClient, BusError
from .runtime import ActorCore, Out

log = structlog.get_logger("tester")

HELDOUT = "smart_tuner.trainer.heldout"
DEMO_TEST = "demo-test"  # what the evaluator reads as the demo's own test sentences
TIMEOUT_S = 1800.0  # sixteen sentences take seconds to a minute on a CPU; this only catches a hung evaluator


@dataclass(frozen=True, slots=True)
class HeldOutSet:
    """How the evaluator is asked for the run's test set, and how the set is named on record."""

    args: tuple[str, ...]  # the dataset argument and its options
    label: str
    threads: int | None = None
    timeout_s: float = TIMEOUT_S


def held_out_set(cfg: TunerConfig) -> HeldOutSet | None:
    """The run's test set, or None when it has none (see the module docstring)."""
    t = cfg.trainer
    if cfg.external is not None or not t.listening_samples:
        return None
    data_dir = ("--data-dir", t.data_dir) if t.data_dir else ()
    if t.test_dataset is not None:
        return HeldOutSet((t.test_dataset, *data_dir), t.test_dataset, t.threads)
    if t.test_count:
        held = f"{t.val_count},{t.test_count},0"  # the trainer's split seed is 0
        label = f"{t.test_count} utterances held out of {t.dataset}"
        return HeldOutSet((t.dataset, "--held-out", held, *data_dir), label, t.threads)
    if t.dataset == "demo":
        return HeldOutSet((DEMO_TEST,), "the demo corpus's test sentences", t.threads)
    return None


@dataclass(frozen=True, slots=True)
class _Job:
    segment_id: str
    step: int
    checkpoint: str
    sha256: str
    final: bool
    cause: Envelope | None


class ChampionTesterIO:
    """Runs the evaluator one job at a time and proposes what it measured."""

    def __init__(self, client: BusClient, run_dir: Path, spec: HeldOutSet) -> None:
        self.client = client
        self.run_dir = run_dir
        self.spec = spec
        self.waiting: _Job | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, job: _Job) -> None:
        if self.waiting is not None and self.waiting.final and not job.final:
            return  # the end-of-run measurement is never displaced by an older promotion
        self.waiting = job
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tester-io")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.waiting is not None:
                job, self.waiting = self.waiting, None
                tested = await self._measure(job)
                env = Envelope.new(
                    tested,
                    actor="tester",
                    corr=job.cause.corr if job.cause else None,
                    cause=job.cause.id if job.cause else None,
                )
                try:
                    ack = await self.client.propose_payload(encode(env), 10.0)
                except BusError as exc:  # the run is closing: the measurement is lost, not the run
                    log.warning("test result not recorded", segment_id=job.segment_id, error=str(exc))
                    continue
                if not ack.ok:
                    log.warning("test result refused", segment_id=job.segment_id, error=ack.error)

    async def _measure(self, job: _Job) -> m.ChampionTested:
        samples = self.run_dir / "samples" if job.final else None
        out = (samples / "test_metrics.json") if samples else self.run_dir / "tests" / f"{job.segment_id}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", HELDOUT, job.checkpoint, *self.spec.args, "--json", str(out)]
        cmd += ["--sha256", job.sha256]
        if samples is not None:
            cmd += ["--samples", str(samples)]
        if self.spec.threads:
            cmd += ["--threads", str(self.spec.threads)]
        t0 = time.monotonic()
        error: str | None = None
        metrics: dict[str, float] = {}
        n = 0
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            return self._tested(job, samples, {}, 0, f"the evaluator could not start: {exc}", t0)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.spec.timeout_s)
            if proc.returncode != 0:
                lines = err.decode("utf-8", "replace").strip().splitlines() or ["(no output)"]
                error = f"the evaluator exited {proc.returncode}: {lines[-1][:400]}"
            else:
                doc = json.loads(out.read_text(encoding="utf-8"))
                n = int(doc.pop("n_sentences", 0))
                metrics = {k: float(v) for k, v in doc.items()}
        except TimeoutError:
            error = f"the evaluator took over {self.spec.timeout_s:.0f} s and was stopped"
        except (OSError, ValueError) as exc:
            error = f"the evaluator's result could not be read: {exc}"
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return self._tested(job, samples, metrics, n, error, t0)

    def _tested(
        self, job: _Job, samples: Path | None, metrics: dict[str, float], n: int, error: str | None, t0: float
    ) -> m.ChampionTested:
        if error is not None:
            log.warning("champion not measured on the test set", segment_id=job.segment_id, error=error)
        return m.ChampionTested(
            segment_id=job.segment_id,
            step=job.step,
            checkpoint=job.checkpoint,
            test_set=self.spec.label,
            n_sentences=n,
            metrics=metrics,
            final=job.final,
            samples=str(samples) if samples is not None and error is None else None,
            error=error,
            elapsed_s=round(time.monotonic() - t0, 3),
        )


class ChampionTester(ActorCore):
    """See the module docstring."""

    name = "tester"

    def __init__(self, io: ChampionTesterIO) -> None:
        self.io = io

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        msg = env.data
        if isinstance(msg, m.ChampionPromoted) and state.control.phase == "running":
            self.io.submit(_Job(msg.segment_id, msg.step, msg.checkpoint, msg.checkpoint_sha256, False, env))
        elif isinstance(msg, m.StopDecided):
            self._final(state, env)
        return ()

    def resume(self, state: TunerState) -> Sequence[Out]:
        self._final(state, None)
        return ()

    def _final(self, state: TunerState, cause: Envelope | None) -> None:
        champion = state.tuning.champion
        if champion is not None and final_test_due(state):
            job = _Job(champion.segment_id, champion.step, champion.checkpoint, champion.checkpoint_sha256, True, cause)
            self.io.submit(job)

    async def setup(self) -> None:
        await self.io.start()

    async def teardown(self) -> None:
        await self.io.close()
