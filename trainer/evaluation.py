"""Validation of a live trainer: losses, the unweighted objective, alignment and gate health.

    metrics, png = validate(trainer)

Teacher-forced over the fixed validation set, in eval mode, with the prenet's dropout
(on at inference, as in the paper) drawn from a fixed seed in a forked RNG: every
candidate is measured on the same draws, and the training RNG is left untouched, so
validating does not change what training does next. With weight averaging on
(``ema_decay > 0``) the same metrics are also reported for the averaged weights, as
``ema_*``.

Metric names: ``val_loss`` (the weighted training loss on validation data, NVIDIA's
``validation.loss``), ``val_mel_loss``, ``val_mel_post_loss``, ``val_gate_loss``,
``val_guided_attn_loss``, ``val_objective`` (mel after postnet + gate, unweighted: what
candidates are compared on), ``diagonality``, ``focus_rate``, ``attention_entropy``,
``coverage``, ``gate_accuracy``; and free-running on the same sentences
(``trainer/free_running.py``: the model decodes from its own output, each sentence capped
at twice its reference): ``fr_gate_stop_rate``, ``fr_length_ratio``, ``fr_mcd_dtw``,
``fr_diagonality``, ``fr_focus_rate``.

Imports torch and ``trainer`` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from ..protocol import metrics as mx
from .data import Batch
from .free_running import free_run
from .hparams import HParams
from .loss import Tacotron2Loss
from .metrics import alignment_image, alignment_metrics, decoder_steps, gate_accuracy, to_rgb, tts_panel
from .model import Tacotron2
from .png import encode_png

if TYPE_CHECKING:
    from .harness import Trainer


@contextlib.contextmanager
def swapped_weights(model: Tacotron2, weights: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """``model`` with ``weights`` (the averaged ones) loaded over its own for the block, then restored."""
    if weights is None:
        yield
        return
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict({**saved, **weights})
    try:
        yield
    finally:
        model.load_state_dict(saved)


def measure(
    model: Tacotron2,
    loss: Tacotron2Loss,
    batches: Sequence[Batch],
    hp: HParams,
    device: torch.device,
    panel: list[bytes] | None = None,
) -> tuple[dict[str, float], bytes]:
    """Teacher-forced metrics over ``batches`` (means weighted by utterances) and the first alignment as PNG;
    with ``panel``, the first utterance's mels and gate (``metrics.tts_panel``) as PNG appended to it."""
    r = hp.n_frames_per_step
    sums: dict[str, float] = {}
    total_weight = 0
    png = b""
    for cpu_batch in batches:
        batch = cpu_batch.to(device)
        out = model(batch.text, batch.text_lengths, batch.mel, 1.0)
        parts = loss(out, batch.mel, batch.gate, batch.text_lengths, batch.mel_lengths).floats()
        steps = decoder_steps(batch.mel_lengths, r)
        values = {f"val_{k}": v for k, v in parts.items()}
        values.update(alignment_metrics(out.alignments, batch.text_lengths, steps))
        values[mx.GATE_ACCURACY] = gate_accuracy(out.gate, batch.gate, batch.mel_lengths, hp.gate_threshold)
        weight = int(batch.text.size(0))
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * weight
        total_weight += weight
        if not png:
            image = alignment_image(out.alignments[0], int(batch.text_lengths[0]), int(steps[0]))
            png = encode_png(to_rgb(image))
            if panel is not None:
                length = int(batch.mel_lengths[0])
                tts = tts_panel(batch.mel[0], out.mel_post[0], out.gate[0], batch.gate[0], length, hp.gate_threshold)
                panel.append(encode_png(tts))
    return {k: v / max(1, total_weight) for k, v in sums.items()}, png


def _measure(trainer: Trainer, panel: list[bytes] | None = None) -> tuple[dict[str, float], bytes]:
    r = trainer.hp.n_frames_per_step
    return measure(trainer.model, trainer.loss, trainer.data.val_batches(r), trainer.hp, trainer.device, panel)


def _free_running(trainer: Trainer) -> dict[str, float]:
    data = trainer.data
    return free_run(trainer.model, data.val, trainer.hp, data.mel_mean, data.mel_std, trainer.config.val_seed).metrics


def validate(trainer: Trainer) -> tuple[dict[str, float], bytes]:
    was_training = trainer.model.training
    trainer.model.eval()
    devices = [trainer.device.index or 0] if trainer.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(trainer.config.val_seed)
            panel: list[bytes] = []
            metrics, png = _measure(trainer, panel)
            trainer.tts_png = panel[0] if panel else None  # the first utterance's mels and gate, for the dashboard
            metrics.update(_free_running(trainer))
            if trainer.ema is not None:
                torch.manual_seed(trainer.config.val_seed)
                with swapped_weights(trainer.model, trainer.ema):
                    ema, _ = _measure(trainer)
                    ema.update(_free_running(trainer))
                metrics.update({f"ema_{k}": v for k, v in ema.items()})
    finally:
        trainer.model.train(was_training)
    return metrics, png
