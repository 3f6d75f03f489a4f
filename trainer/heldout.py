"""Held-out evaluation of a checkpoint: validation's measures on utterances no decision saw.

    metrics = evaluate_checkpoint(Path("run/trainer/checkpoints/r5-t9-g0.pt"), Path("test-corpus"))
    metrics["val_objective"], metrics["fr_gate_stop_rate"]

The checkpoint carries its hyperparameters and the mel normalisation of the data it was
trained on, so only the utterances are needed (an LJSpeech folder or an NVIDIA filelist).
The measures are validation's (``trainer/evaluation.py``), under the same names:
teacher-forced ``val_*``, the alignment metrics, ``gate_accuracy`` and the free-running
``fr_*``; with averaged weights in the checkpoint, also the averaged model's as ``ema_*``.
The prenet's dropout draws from ``seed`` in a forked RNG, as validation's does, so two
checkpoints are measured on the same draws.

What a benchmark or an end-of-run report shows as the *test* result; nothing in the tuner
reads it.

Imports torch and ``trainer`` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import TrainerConfig, audio_config, default_cache_dir
from .data import MelCache, collate, load_dataset
from .evaluation import measure
from .free_running import free_run
from .hparams import HParams
from .loss import Tacotron2Loss
from .model import Tacotron2
from .text import SYMBOLS, text_to_ids


@contextlib.contextmanager
def _weights(model: Tacotron2, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict({**saved, **weights})
    try:
        yield
    finally:
        model.load_state_dict(saved)


@torch.no_grad()
def evaluate_checkpoint(
    path: Path,
    dataset: Path,
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    seed: int = 4321,
    batch_size: int = 16,
) -> dict[str, float]:
    """Validation's metrics of the checkpoint at ``path`` on ``dataset`` (see the module docstring)."""
    payload = ckpt.load(path, sha256)
    hp = HParams.from_dict(payload["hparams"])
    model = Tacotron2(hp, len(SYMBOLS))
    model.load_state_dict(payload["model"])
    model.eval()
    stats = payload.get("mel_stats") or {}
    mean, std = stats.get("mean"), stats.get("std")
    utterances = load_dataset(dataset)
    cache = MelCache(cache_dir or default_cache_dir(TrainerConfig(), Path(dataset)), audio_config(hp))
    items = []
    for utt in utterances:
        mel = cache.get(utt)
        if mean is not None and std is not None:
            mel = (mel - mean.unsqueeze(1)) / std.unsqueeze(1)
        items.append((torch.tensor(text_to_ids(utt.text), dtype=torch.long), mel))
    r = hp.n_frames_per_step
    batches = [collate(items[i : i + batch_size], r) for i in range(0, len(items), batch_size)]
    loss = Tacotron2Loss(hp)
    loss.decay_steps = int(payload["schedule"]["guided_attn_decay_steps"])
    device = torch.device("cpu")

    def both() -> dict[str, float]:
        torch.manual_seed(seed)
        metrics, _ = measure(model, loss, batches, hp, device)
        metrics.update(free_run(model, items, hp, mean, std, seed, batch_size=batch_size).metrics)
        return metrics

    with torch.random.fork_rng():
        metrics = both()
        if payload.get("ema"):
            with _weights(model, payload["ema"]):
                metrics.update({f"ema_{k}": v for k, v in both().items()})
    return metrics
