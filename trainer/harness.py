"""The segment harness: train N steps from a checkpoint with a set of hyperparameters, in place.

    trainer = Trainer(TrainerConfig(dataset="demo"), preset("demo"))
    result = trainer.run_segment("s1", from_checkpoint=None, from_sha256=None,
                                 hparams={"learning_rate": 3e-3}, steps=200, eval_every=100)
    result = trainer.run_segment("s2", result.checkpoint, result.sha256, {"learning_rate": 1e-3}, 200, 100)

One ``Trainer`` lives as long as its process (the worker): between segments it keeps the
model, the optimizer, the data and the mel cache in memory and applies the next
hyperparameters in place (``trainer.hparams`` says how each one is applied). A segment
starts from a recorded checkpoint (loaded and verified unless the trainer already holds
exactly that state) or, given none, from the seed's initial weights; it ends with a
validation and an atomically written checkpoint whose sha256 the caller records.

Imports torch, numpy, the standard library and ``trainer`` only.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..protocol import metrics as mx
from . import checkpoint as ckpt
from .config import TrainerConfig
from .data import BatchStream
from .distributed import Dist
from .evaluation import validate
from .fileio import write_atomic
from .hparams import HParamError, HParams
from .inplace import Applied, ColdChangeError, apply_hparams, new_optimizer, set_optimizer_hparams
from .loss import Tacotron2Loss
from .model import Tacotron2
from .text import SYMBOLS, SYMBOLS_ID
from .training_data import TrainingData

Report = Callable[[int, dict[str, float]], None]
ShouldAbort = Callable[[], bool]

__all__ = ["ColdChangeError", "HParamError", "SegmentError", "SegmentResult", "Trainer", "TrainerConfig"]


class SegmentError(Exception):
    """A segment that could not finish; ``reason`` is one of nan, oom, aborted, error."""

    def __init__(self, reason: str, detail: str, step: int | None) -> None:
        super().__init__(f"{reason} at step {step}: {detail}")
        self.reason, self.detail, self.step = reason, detail, step


@dataclass
class SegmentResult:
    segment_id: str
    start_step: int
    end_step: int
    metrics: dict[str, float]
    checkpoint: Path
    sha256: str
    duration_s: float
    applied: Applied
    alignment_png: Path | None
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, config: TrainerConfig, hp: HParams) -> None:
        self.config = config
        self.device = config.resolved_device()
        if hp.fp16_run and self.device.type != "cuda":
            raise HParamError("fp16_run: mixed precision needs a CUDA device; this trainer runs on " + str(self.device))
        if config.threads:
            torch.set_num_threads(config.threads)
        self.data = TrainingData.build(config, hp)
        self.initial_hp = hp
        self.dist: Dist | None = None  # set under torchrun: data-parallel across ranks (distributed.py)
        self._fresh(hp)

    # --- state ----------------------------------------------------------------------

    def _fresh(self, hp: HParams) -> None:
        """The state at step 0: weights, optimizer, stream and RNGs all from ``hp.seed``."""
        _seed_all(hp.seed)
        self.hp = hp
        self.model = Tacotron2(hp, len(SYMBOLS)).to(self.device)
        self.optimizer = new_optimizer(self.model, hp)
        self.loss = Tacotron2Loss(hp)
        self.stream = BatchStream(len(self.data.train), hp.batch_size, hp.seed)
        self.scaler = torch.amp.GradScaler("cuda", enabled=hp.fp16_run)
        self.ema: dict[str, torch.Tensor] | None = None
        self.injected: set[int] = set()  # steps where a NaN was injected already (inject_nan_at_step)
        self.step = 0
        self.holds: tuple[Path, str] | None = None  # the checkpoint the in-memory state equals, if any
        self.tts_png: bytes | None = None  # the last validation's first utterance: mels and gate (PNG)

    @property
    def compat(self) -> dict[str, Any]:
        """What a checkpoint must share with this trainer to be loaded into it."""
        return {"cold": self.hp.cold_hash(), "symbols": SYMBOLS_ID, "dataset": self.data.dataset_id}

    def release_memory(self) -> None:
        """Between segments: collect what the last one left (autograd graphs, a rebuilt model's old
        weights) and hand CUDA's cached blocks back to the driver, so the next trial on this GPU (or a
        batch-size increase) starts from what the model really holds, not from the last peak."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def payload(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema,
            "step": self.step,
            "stream": self.stream.state_dict(),
            "rng": ckpt.rng_state(),
            "scaler": self.scaler.state_dict(),
            "schedule": {"guided_attn_decay_steps": self.loss.decay_steps},
            "hparams": self.hp.to_dict(),
            "compat": self.compat,
            "n_symbols": len(SYMBOLS),
            "mel_stats": {"mean": self.data.mel_mean, "std": self.data.mel_std},
        }

    def save(self, path: Path) -> str:
        sha = ckpt.save(path, self.payload())
        self.holds = (path, sha)
        return sha

    def load(self, path: Path, sha256: str | None) -> None:
        """Continue from ``path`` (verified against ``sha256``): every part of the state is replaced."""
        payload = ckpt.load(path, sha256, map_location=str(self.device))
        self.restore(payload, path)
        self.holds = (path, sha256 or ckpt.recorded_sha256(path) or "")

    def restore(self, payload: dict[str, Any], path: Path) -> None:
        """Replace every part of the state with a loaded checkpoint's ``payload`` (``path`` names it in errors)."""
        hp = HParams.from_dict(payload["hparams"])
        theirs = dict(payload["compat"])
        if theirs != {**self.compat, "cold": hp.cold_hash()} or hp.cold_hash() != self.hp.cold_hash():
            raise ckpt.CheckpointError(
                f"checkpoint {path} was made for another model or dataset: {theirs} vs this trainer's {self.compat}"
            )
        if hp.n_frames_per_step != self.model.r:  # a different shape: build it before loading the weights
            self.model = Tacotron2(hp, len(SYMBOLS)).to(self.device)
        self.model.load_state_dict(payload["model"])
        self.hp = hp
        self.model.set_dropouts(hp)
        self.optimizer = new_optimizer(self.model, hp)
        self.optimizer.load_state_dict(payload["optimizer"])
        set_optimizer_hparams(self.optimizer, hp)  # the loaded state carries its own lr and decay: re-apply ours
        self.loss = Tacotron2Loss(hp)
        self.loss.decay_steps = int(payload["schedule"]["guided_attn_decay_steps"])
        self.stream = BatchStream(len(self.data.train), hp.batch_size, hp.seed)
        self.stream.load_state_dict(payload["stream"])
        if payload["scaler"]:
            self.scaler.load_state_dict(payload["scaler"])
        self.ema = payload["ema"]
        self.step = int(payload["step"])
        ckpt.set_rng_state(payload["rng"])
        self.holds = None

    # --- hyperparameters ---------------------------------------------------------------

    def apply(self, changes: Mapping[str, Any]) -> Applied:
        """Apply ``changes`` on top of the active hyperparameters (hot in place, warm rebuilt, cold refused)."""
        new = self.hp.replace(**dict(changes))
        applied = apply_hparams(self, new)
        if applied.changes:
            self.holds = None
        return applied

    # --- training ----------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One optimizer step; raises SegmentError("nan") on a non-finite loss or gradient."""
        hp, step = self.hp, self.step + 1
        self.holds = None  # from here on (even if this step fails) the state is no checkpoint's
        indices = self.stream.next_indices()
        if self.dist is not None:
            indices = self.dist.shard(indices)  # this rank's slice of the step's batch
        batch = self.data.train_batch(indices, hp.n_frames_per_step).to(self.device)
        self.model.train()
        with torch.autocast(self.device.type, enabled=hp.fp16_run):
            out = self.model(batch.text, batch.text_lengths, batch.mel, hp.teacher_forcing_ratio)
            parts = self.loss(out, batch.mel, batch.gate, batch.text_lengths, batch.mel_lengths)
        total = parts.total
        if hp.inject_nan_at_step == step and step not in self.injected:  # fault injection, for the guard rails' tests
            self.injected.add(step)  # once per trainer: a re-run after the rollback passes this step
            total = total * math.nan
        finite = bool(torch.isfinite(total))
        if self.dist is not None:
            finite = self.dist.all_finite(0.0 if finite else math.nan)  # every rank fails together, or none
        if not finite:
            raise SegmentError("nan", f"training loss is {float(total.detach())}", step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()  # type: ignore[no-untyped-call]
        self.scaler.unscale_(self.optimizer)
        if self.dist is not None:
            self.dist.average_gradients(self.model.parameters())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), hp.grad_clip_thresh))
        if not math.isfinite(grad_norm) and not hp.fp16_run:  # AMP skips such a step itself
            raise SegmentError("nan", f"gradient norm is {grad_norm}", step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.dist is not None:
            self.dist.average_buffers(self.model)
        self._update_ema()
        self.loss.decay_steps += 1
        self.step = step
        floats = parts.floats()
        return {
            mx.TRAIN_LOSS: floats["loss"],
            mx.TRAIN_MEL_LOSS: floats["mel_loss"],
            mx.TRAIN_MEL_POST_LOSS: floats["mel_post_loss"],
            mx.TRAIN_GATE_LOSS: floats["gate_loss"],
            mx.TRAIN_GUIDED_ATTN_LOSS: floats["guided_attn_loss"],
            mx.TRAIN_OBJECTIVE: floats["objective"],
            mx.GRAD_NORM: grad_norm,
        }

    def _update_ema(self) -> None:
        decay = self.hp.ema_decay
        if decay <= 0:
            self.ema = None
            return
        with torch.no_grad():
            params = {k: v.detach() for k, v in self.model.state_dict().items() if v.is_floating_point()}
            if self.ema is None or self.ema.keys() != params.keys():
                self.ema = {k: v.clone() for k, v in params.items()}
            else:
                for k, v in params.items():
                    self.ema[k].mul_(decay).add_(v, alpha=1 - decay)

    def train(self, steps: int, report_every: int, report: Report | None, should_abort: ShouldAbort | None) -> None:
        window: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        for _ in range(steps):
            abort = should_abort is not None and should_abort()
            if self.dist is not None:
                abort = self.dist.any(abort)  # rank 0 hears the supervisor; every rank stops at the same step
            if abort:
                raise SegmentError("aborted", "abort requested", self.step)
            try:
                values = self.train_step()
            except torch.OutOfMemoryError as exc:
                raise SegmentError("oom", str(exc).splitlines()[0], self.step + 1) from None
            except RuntimeError as exc:  # the CPU allocator's out-of-memory is a plain RuntimeError
                if "can't allocate memory" not in str(exc):
                    raise
                raise SegmentError("oom", str(exc).splitlines()[0], self.step + 1) from None
            for k, v in values.items():
                window.setdefault(k, []).append(v)
            if report is not None and (self.step % report_every == 0):
                dt = time.perf_counter() - t0
                report(self.step, self._summary(window, dt))
                window, t0 = {}, time.perf_counter()

    def _summary(self, window: dict[str, list[float]], dt: float) -> dict[str, float]:
        out = {k: sum(v) / len(v) for k, v in window.items()}
        n = len(window.get(mx.GRAD_NORM, ()))
        out[mx.GRAD_NORM_MAX] = max(window.get(mx.GRAD_NORM, [0.0]))
        out[mx.STEPS_PER_S] = n / dt if dt > 0 else 0.0
        out[mx.LEARNING_RATE] = self.hp.learning_rate
        out[mx.GUIDED_ATTN_WEIGHT_EFF] = self.loss.effective_guided_attn_weight
        return out

    def validate(self) -> tuple[dict[str, float], bytes]:
        """Validation metrics (teacher-forced, fixed seed) and the first utterance's alignment as PNG."""
        return validate(self)

    # --- segments ----------------------------------------------------------------------

    def run_segment(
        self,
        segment_id: str,
        from_checkpoint: Path | str | None,
        from_sha256: str | None,
        hparams: Mapping[str, Any],
        steps: int,
        eval_every: int = 0,
        report_every: int = 10,
        report: Report | None = None,
        should_abort: ShouldAbort | None = None,
        checkpoint_path: Path | None = None,
        on_applied: Callable[[Applied, int], None] | None = None,
    ) -> SegmentResult:
        t0 = time.perf_counter()
        self._start_from(Path(from_checkpoint) if from_checkpoint else None, from_sha256)
        applied = self.apply(hparams)
        start = self.step
        path = checkpoint_path or self.config.output_dir / "checkpoints" / f"{segment_id}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        if on_applied is not None:
            on_applied(applied, start)
        evals: list[tuple[int, dict[str, float]]] = []
        eval_every = eval_every if eval_every > 0 else steps
        done = 0
        while done < steps:
            chunk = min(eval_every - (done % eval_every), steps - done)
            self.train(chunk, max(1, report_every), report, should_abort)
            done += chunk
            if self.dist is not None and self.dist.rank != 0:
                continue  # rank 0 validates, reports and saves for every rank
            if done < steps:
                metrics, png = self.validate()
                evals.append((self.step, metrics))
                write_atomic(path.with_suffix(f".step{self.step}.alignment.png"), png)
                if report is not None:
                    report(self.step, metrics)
        if self.dist is not None and self.dist.rank != 0:
            return SegmentResult(segment_id, start, self.step, {}, path, "", time.perf_counter() - t0, applied, None)
        metrics, png = self.validate()
        evals.append((self.step, metrics))
        sha = self.save(path)
        image = path.with_suffix(".alignment.png")
        write_atomic(image, png)
        if self.tts_png:
            write_atomic(path.with_suffix(".tts.png"), self.tts_png)
        return SegmentResult(
            segment_id, start, self.step, metrics, path, sha, time.perf_counter() - t0, applied, image, evals
        )

    def _start_from(self, path: Path | None, sha256: str | None) -> None:
        if path is None:  # from the seed's initial weights, whatever this trainer did before
            self._fresh(self.initial_hp)
            return
        if self.holds is not None and self.holds[0] == path and (sha256 is None or self.holds[1] == sha256):
            return  # already exactly that state in memory: nothing to load
        self.load(path, sha256)
