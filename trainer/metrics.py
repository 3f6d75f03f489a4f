"""TTS validation metrics for Tacotron2-style models: attention alignment health (diagonality,
focus rate, entropy, coverage), stop-gate accuracy and stop timing, and alignment heat maps.

Every metric looks at the unpadded region only: decoder steps ``< mel_length`` and encoder
positions ``< text_length`` of each utterance; whatever the padding holds is ignored. Batch
values are pooled (each valid decoder step, encoder position or frame counts once), so a long
utterance weighs more than a short one, except ``gate_stop_error``, which is per utterance.

Called as ``alignment_metrics(alignments, text_lengths, mel_lengths)`` on a validation batch,
with ``mel_lengths`` in decoder steps (``decoder_steps(frames, r)`` converts from frames).

Imports torch, numpy (for images) and the standard library only; it must not import the model
or anything else from the project, so any trainer can use it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from ..protocol import metrics as mx

__all__ = [
    "alignment_image",
    "alignment_metrics",
    "attention_entropy",
    "coverage",
    "decoder_steps",
    "diagonality",
    "focus_rate",
    "gate_accuracy",
    "gate_stop_error",
    "to_rgb",
]

# matplotlib's viridis sampled at 8 evenly spaced points: close enough to the real colormap
# for a heat map, and it keeps matplotlib out of the trainer.
_VIRIDIS_ANCHORS = np.array(
    [
        [68, 1, 84],
        [70, 50, 126],
        [54, 92, 141],
        [39, 127, 142],
        [31, 161, 135],
        [74, 193, 109],
        [160, 218, 57],
        [253, 231, 37],
    ],
    dtype=np.float64,
)


# ---------------------------------------------------------------------------------------------
# Masks and input checks
# ---------------------------------------------------------------------------------------------


def _check_lengths(name: str, lengths: Tensor, batch: int, limit: int) -> None:
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > limit):
        raise ValueError(f"{name} must lie in [1, {limit}], got {lengths.tolist()}")


def _length_mask(lengths: Tensor, size: int, device: torch.device) -> Tensor:
    """(B, size) bool mask on ``device``, True where the index is below the utterance's length.
    Lengths often live on the CPU while the model's outputs are on the GPU."""
    positions = torch.arange(size, device=device)
    return positions.unsqueeze(0) < lengths.to(device).unsqueeze(1)


def _alignment_masks(alignments: Tensor, text_lengths: Tensor, mel_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Checks the shapes and returns (decoder mask (B, T_dec), encoder mask (B, T_enc))."""
    if alignments.dim() != 3:
        raise ValueError(f"alignments must have shape (B, T_dec, T_enc), got {tuple(alignments.shape)}")
    batch, t_dec, t_enc = alignments.shape
    _check_lengths("text_lengths", text_lengths, batch, t_enc)
    _check_lengths("mel_lengths", mel_lengths, batch, t_dec)
    device = alignments.device
    return _length_mask(mel_lengths, t_dec, device), _length_mask(text_lengths, t_enc, device)


def _pooled_mean(values: Tensor, mask: Tensor) -> float:
    """Mean of ``values`` where ``mask`` holds; 0.0 for an empty batch."""
    count = int(mask.sum())
    if count == 0:
        return 0.0
    return float(values.double().masked_fill(~mask, 0.0).sum() / count)


def decoder_steps(mel_lengths_frames: Tensor, r: int) -> Tensor:
    """Mel lengths in frames -> decoder steps: each Tacotron2 step emits ``r`` frames, and the last
    step may be only partly filled, hence the ceiling."""
    if r < 1:
        raise ValueError(f"r (frames per decoder step) must be >= 1, got {r}")
    return torch.div(mel_lengths_frames + (r - 1), r, rounding_mode="floor")


# ---------------------------------------------------------------------------------------------
# Alignment metrics
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def diagonality(alignments: Tensor, text_lengths: Tensor, mel_lengths: Tensor, band: float = 0.1) -> float:
    """Share of valid decoder steps whose attention argmax lies within ``max(1, band * T_enc_i)``
    encoder positions of the line from (0, 0) to (T_dec_i, T_enc_i); in [0, 1]."""
    dec_mask, enc_mask = _alignment_masks(alignments, text_lengths, mel_lengths)
    # -inf in the padding keeps the argmax on real text whatever the padding holds.
    masked = alignments.float().masked_fill(~enc_mask.unsqueeze(1), -math.inf)
    argmax = masked.argmax(dim=2).double()
    t_enc = text_lengths.to(argmax.device).double().unsqueeze(1)
    t_dec = mel_lengths.to(argmax.device).double().unsqueeze(1)
    steps = torch.arange(alignments.shape[1], device=argmax.device, dtype=torch.float64).unsqueeze(0)
    # Per-utterance slope: speech rate differs between utterances, so one global slope would
    # call a healthy fast or slow utterance off-diagonal.
    expected = steps * t_enc / t_dec
    half_width = torch.clamp(band * t_enc, min=1.0)
    hits = ((argmax - expected).abs() <= half_width).double()
    return _pooled_mean(hits, dec_mask)


def _valid_weights(alignments: Tensor, dec_mask: Tensor, enc_mask: Tensor) -> Tensor:
    """Attention weights as float64 with every padded cell set to 0."""
    full = dec_mask.unsqueeze(2) & enc_mask.unsqueeze(1)
    return alignments.double().masked_fill(~full, 0.0)


@torch.no_grad()
def focus_rate(alignments: Tensor, text_lengths: Tensor, mel_lengths: Tensor) -> float:
    """FastSpeech focus rate: mean over valid decoder steps of the largest attention weight over
    valid encoder positions (1 = sharp, 1/T_enc = uniform)."""
    dec_mask, enc_mask = _alignment_masks(alignments, text_lengths, mel_lengths)
    peaks = _valid_weights(alignments, dec_mask, enc_mask).amax(dim=2)
    return _pooled_mean(peaks, dec_mask)


@torch.no_grad()
def attention_entropy(alignments: Tensor, text_lengths: Tensor, mel_lengths: Tensor) -> float:
    """Mean over valid decoder steps of the attention entropy over valid encoder positions, divided
    by log(T_enc_i): 1 = uniform, 0 = one-hot. A one-token text counts as 0."""
    dec_mask, enc_mask = _alignment_masks(alignments, text_lengths, mel_lengths)
    weights = _valid_weights(alignments, dec_mask, enc_mask).clamp(min=0.0)
    # Renormalise over the valid positions: whatever mass leaked into padding would otherwise
    # push the value outside [0, 1].
    totals = weights.sum(dim=2, keepdim=True)
    probs = weights / totals.clamp(min=1e-12)
    plogp = torch.where(probs > 0, probs * probs.clamp(min=1e-300).log(), torch.zeros_like(probs))
    entropy = -plogp.sum(dim=2)
    log_n = text_lengths.to(entropy.device).double().log().unsqueeze(1)
    normalised = torch.where(log_n > 0, entropy / log_n.clamp(min=1e-12), torch.zeros_like(entropy))
    return _pooled_mean(normalised, dec_mask)


@torch.no_grad()
def coverage(alignments: Tensor, text_lengths: Tensor, mel_lengths: Tensor, threshold: float = 0.5) -> float:
    """Share of valid encoder positions whose attention, summed over valid decoder steps, is at
    least ``threshold``: how much of the text was attended to at all."""
    dec_mask, enc_mask = _alignment_masks(alignments, text_lengths, mel_lengths)
    received = _valid_weights(alignments, dec_mask, enc_mask).sum(dim=1)
    return _pooled_mean((received >= threshold).double(), enc_mask)


def alignment_metrics(alignments: Tensor, text_lengths: Tensor, mel_lengths: Tensor) -> dict[str, float]:
    """All four alignment metrics with their default settings, keyed by name."""
    return {
        mx.DIAGONALITY: diagonality(alignments, text_lengths, mel_lengths),
        mx.FOCUS_RATE: focus_rate(alignments, text_lengths, mel_lengths),
        mx.ATTENTION_ENTROPY: attention_entropy(alignments, text_lengths, mel_lengths),
        mx.COVERAGE: coverage(alignments, text_lengths, mel_lengths),
    }


# ---------------------------------------------------------------------------------------------
# Stop gate
# ---------------------------------------------------------------------------------------------


def _gate_mask(gate_logits: Tensor, mel_lengths: Tensor) -> Tensor:
    if gate_logits.dim() != 2:
        raise ValueError(f"gate_logits must have shape (B, T), got {tuple(gate_logits.shape)}")
    batch, frames = gate_logits.shape
    _check_lengths("mel_lengths", mel_lengths, batch, frames)
    return _length_mask(mel_lengths, frames, gate_logits.device)


@torch.no_grad()
def gate_accuracy(gate_logits: Tensor, gate_targets: Tensor, mel_lengths: Tensor, threshold: float = 0.5) -> float:
    """Share of valid frames (``< mel_length``) where ``sigmoid(logit) > threshold`` agrees with
    ``target > 0.5``. The model emits logits; comparing them to the threshold directly would put
    the decision at probability 0.62 instead of 0.5."""
    mask = _gate_mask(gate_logits, mel_lengths)
    if gate_targets.shape != gate_logits.shape:
        raise ValueError(f"gate_targets must have shape {tuple(gate_logits.shape)}, got {tuple(gate_targets.shape)}")
    predicted = torch.sigmoid(gate_logits.float()) > threshold
    agree = (predicted == (gate_targets.to(predicted.device) > 0.5)).double()
    return _pooled_mean(agree, mask)


@torch.no_grad()
def gate_stop_error(gate_logits: Tensor, mel_lengths: Tensor, threshold: float = 0.5) -> float:
    """Mean over utterances of |predicted stop frame - (mel_length - 1)| / mel_length, where the
    predicted stop is the first valid frame with ``sigmoid(logit) > threshold``, or ``mel_length``
    if there is none. Padding frames are not searched (their inputs are teacher-forced padding),
    so a late stop counts as one frame past the end: early stops are measured in full, late ones
    only flagged."""
    mask = _gate_mask(gate_logits, mel_lengths)
    if gate_logits.shape[0] == 0:
        return 0.0
    stops = (torch.sigmoid(gate_logits.float()) > threshold) & mask
    frames = gate_logits.shape[1]
    positions = torch.arange(frames, device=gate_logits.device).expand_as(stops)
    lengths = mel_lengths.to(gate_logits.device).long()
    # A frame index past every valid frame marks "no stop"; the min then finds the first stop.
    sentinel = torch.full_like(positions, frames)
    first = torch.where(stops, positions, sentinel).amin(dim=1)
    first = torch.minimum(first, lengths)
    error = (first - (lengths - 1)).abs().double() / lengths.double()
    return float(error.mean())


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def alignment_image(alignment: Tensor, text_length: int, mel_length: int) -> npt.NDArray[np.uint8]:
    """One utterance's alignment (T_dec, T_enc) as a grayscale heat map (text_length, mel_length):
    decoder steps left to right, encoder position 0 on the bottom row (as in NVIDIA's plot),
    scaled so the largest weight is 255."""
    if alignment.dim() != 2:
        raise ValueError(f"alignment must have shape (T_dec, T_enc), got {tuple(alignment.shape)}")
    t_dec, t_enc = alignment.shape
    if not 1 <= mel_length <= t_dec or not 1 <= text_length <= t_enc:
        raise ValueError(
            f"mel_length must lie in [1, {t_dec}] and text_length in [1, {t_enc}], got {mel_length}, {text_length}"
        )
    region = alignment[:mel_length, :text_length].detach().double().cpu().numpy()
    region = np.nan_to_num(region, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    # Rows are encoder positions; image row 0 is the top, so flip to put position 0 at the bottom.
    heat = np.flipud(region.T)
    peak = float(heat.max())
    if peak <= 0.0:
        return np.zeros(heat.shape, dtype=np.uint8)
    return np.ascontiguousarray(np.rint(heat / peak * 255.0).astype(np.uint8))


@torch.no_grad()
def tts_panel(
    mel_target: Tensor,
    mel_pred: Tensor,
    gate_logits: Tensor,
    gate_target: Tensor,
    mel_length: int,
    gate_threshold: float,
) -> npt.NDArray[np.uint8]:
    """One utterance as an RGB image, frames left to right: the target mel (top), the predicted
    mel after the postnet (both on the target's colour scale, low bins at the bottom), and a gate
    strip: the predicted stop probability (yellow), the target (white) and the threshold (grey)."""
    if mel_target.dim() != 2 or mel_pred.shape != mel_target.shape:
        raise ValueError(f"mel target and prediction must be (n_mels, T) alike, got {tuple(mel_target.shape)}")
    frames = max(1, min(int(mel_length), mel_target.shape[1]))
    target = mel_target[:, :frames].detach().double().cpu().numpy()
    pred = mel_pred[:, :frames].detach().double().cpu().numpy()
    lo, hi = float(np.nanmin(target)), float(np.nanmax(target))
    span = hi - lo if hi > lo else 1.0

    def heat(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
        scaled = np.nan_to_num((values - lo) / span, nan=0.0).clip(0.0, 1.0)
        return to_rgb(np.ascontiguousarray(np.rint(np.flipud(scaled) * 255.0).astype(np.uint8)))

    height = 48
    strip = np.full((height, frames, 3), 24, dtype=np.uint8)
    prob = torch.sigmoid(gate_logits[:frames].detach().double().cpu()).numpy()
    wanted = gate_target[:frames].detach().double().cpu().numpy()
    cols = np.arange(frames)
    strip[round((1.0 - gate_threshold) * (height - 1)), :, :] = 110
    strip[np.rint((1.0 - wanted) * (height - 1)).astype(int), cols, :] = 255
    strip[np.rint((1.0 - np.nan_to_num(prob).clip(0, 1)) * (height - 1)).astype(int), cols] = (250, 210, 40)
    gap = np.full((3, frames, 3), 255, dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate([heat(target), gap, heat(pred), gap, strip], axis=0))


def to_rgb(gray: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Grayscale (H, W) uint8 -> RGB (H, W, 3) uint8 through a viridis-like ramp (dark purple for
    0, yellow for 255): a perceptual map shows weak attention better than gray does."""
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"gray must be a (H, W) uint8 array, got {gray.dtype} with shape {gray.shape}")
    anchors_at = np.linspace(0.0, 255.0, len(_VIRIDIS_ANCHORS))
    values = gray.astype(np.float64)
    channels = [np.interp(values, anchors_at, _VIRIDIS_ANCHORS[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)
