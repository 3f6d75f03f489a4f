"""Free-running evaluation: can the model say a sentence on its own, and stop?

    result = free_run(model, items, hp, mel_mean, mel_std, seed=4321)
    result.metrics[mx.FR_GATE_STOP_RATE]    # share of sentences whose stop gate fired in time
    result.mels[i]                          # sentence i as the model said it (log-mel), for listening

``items`` are ``(text ids, reference mel)`` pairs, the reference as the model is trained on
it (standardised when ``mel_mean``/``mel_std`` are given). Teacher-forced validation feeds
the reference frames back into the decoder; here the decoder reads its own output, as
synthesis does, so a model that wins every teacher-forced comparison and cannot stop or
cannot keep its attention on the text shows it here.

Per sentence, decoding is capped at ``cap_ratio`` times the reference's length (and at
``max_decoder_steps``): a model whose gate has not fired by then counts as not stopping by
its gate (it would run on to ``max_decoder_steps``), and the cap keeps the cost of a model
that never stops bounded. The cap is per sentence, so a result does not depend on which
sentences share a batch; the prenet's dropout (on at inference, as in the paper) draws from
``seed`` in a forked RNG, so every candidate hears the same draws and training's RNG is
left alone.

Metrics (names in ``protocol/metrics.py``):

* ``fr_gate_stop_rate``: share of sentences whose gate fired in time: after at least
  ``1 / cap_ratio`` of the reference's length and within the cap (a gate that fires at
  once, as an untrained one does, cuts the sentence short: that is not a stop);
* ``fr_length_ratio``: mean of said length / reference length (1 is right; a sentence
  that did not stop counts at its cap);
* ``fr_mcd_dtw``: mel cepstral distortion in dB after dynamic time warping, between the
  de-normalised said and reference log-mels. The cepstra are a DCT-II of the log-mel
  bands (coefficients 1..24, c0 left out, so loudness does not count), not SPTK's
  mel-generalised cepstra: comparable between runs on one audio configuration, not with
  MCD figures published for other feature pipelines;
* ``fr_diagonality``, ``fr_focus_rate``: the attention metrics of ``trainer/metrics.py``
  on the free-running alignments, up to each sentence's stop.

Each is a mean over the sentences, every sentence counting once.

Imports torch, numpy and ``trainer`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from ..protocol import metrics as mx
from .data import collate
from .hparams import HParams
from .metrics import diagonality, focus_rate
from .model import Tacotron2

MCD_COEFFICIENTS = 24  # c1..c24 (fewer when there are fewer mel bands)
_MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)  # the usual dB factor of mel cepstral distortion


@dataclass
class FreeRun:
    metrics: dict[str, float]
    stopped: list[bool] = field(default_factory=list)  # per sentence: the gate fired within its cap (maybe early)
    frames: list[int] = field(default_factory=list)  # per sentence: frames said (the cap if not stopped)
    mels: list[torch.Tensor] = field(default_factory=list)  # per sentence: (n_mels, frames) log-mel said


# --- mel cepstral distortion with dynamic time warping -------------------------------------


def _dct_matrix(n_bands: int, n_coefficients: int) -> npt.NDArray[np.float64]:
    """Orthonormal DCT-II rows 1..n_coefficients (c0, the overall level, left out)."""
    k = np.arange(1, n_coefficients + 1)[:, None]
    n = np.arange(n_bands)[None, :]
    rows: npt.NDArray[np.float64] = np.sqrt(2.0 / n_bands) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_bands))
    return rows


def cepstra(log_mel: npt.NDArray[np.floating], n_coefficients: int = MCD_COEFFICIENTS) -> npt.NDArray[np.float64]:
    """(n_mels, frames) log-mel -> (frames, K) cepstra, K = min(n_coefficients, n_mels - 1)."""
    bands = log_mel.shape[0]
    dct = _dct_matrix(bands, min(n_coefficients, bands - 1))
    out: npt.NDArray[np.float64] = (dct @ np.asarray(log_mel, dtype=np.float64)).T
    return out


def dtw_mean_cost(cost: npt.NDArray[np.float64]) -> float:
    """Mean cost along the cheapest monotone path from (0, 0) to (n-1, m-1) of an (n, m) matrix.

    Steps (1, 0), (0, 1) and (1, 1), each cell on the path counted once. A row is filled
    in one vectorised pass: within a row, acc[j] = min(tmp[j], cost[j] + acc[j-1]) unrolls
    to S[j] + min over k <= j of (tmp[k] - S[k]), S the row's prefix sums.
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        raise ValueError(f"dtw needs a non-empty cost matrix, got shape {cost.shape}")
    acc = np.empty_like(cost)
    acc[0] = np.cumsum(cost[0])
    for i in range(1, n):
        diagonal = np.concatenate(([np.inf], acc[i - 1, :-1]))
        tmp = cost[i] + np.minimum(acc[i - 1], diagonal)
        prefix = np.cumsum(cost[i])
        acc[i] = prefix + np.minimum.accumulate(tmp - prefix)
    i, j, length = n - 1, m - 1, 1
    while i > 0 or j > 0:  # walk back along the cheapest predecessors to count the path
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            step = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
            i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
        length += 1
    return float(acc[n - 1, m - 1]) / length


def mcd_dtw(said: npt.NDArray[np.floating], reference: npt.NDArray[np.floating]) -> float:
    """Mel cepstral distortion (dB) between two (n_mels, frames) log-mels, aligned by DTW."""
    a, b = cepstra(said), cepstra(reference)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return dtw_mean_cost(_MCD_SCALE * np.sqrt(np.maximum(squared, 0.0)))


# --- decoding ------------------------------------------------------------------------------


def _caps(reference_frames: Sequence[int], r: int, cap_ratio: float, max_decoder_steps: int) -> list[int]:
    """Per sentence, the most frames it may take, a whole number of decoder steps."""
    return [min(max_decoder_steps, max(1, math.ceil(cap_ratio * n / r))) * r for n in reference_frames]


def _said_lengths(gate_logits: torch.Tensor, caps: Sequence[int], r: int, threshold: float) -> list[tuple[bool, int]]:
    """(stopped, frames) per sentence: the decoder step whose frames first cross the threshold."""
    out = []
    fired = torch.sigmoid(gate_logits.float()) > threshold
    for row, cap in enumerate(caps):
        hits = fired[row, :cap].nonzero()
        out.append((True, (int(hits[0]) // r + 1) * r) if len(hits) else (False, cap))
    return out


@dataclass(frozen=True)
class _Said:
    """One sentence, decoded free-running and measured."""

    stopped: bool
    frames: int
    mel: torch.Tensor  # (n_mels, frames), de-normalised log-mel
    mcd_dtw: float
    diagonality: float
    focus_rate: float


@torch.no_grad()
def free_run(
    model: Tacotron2,
    items: Sequence[tuple[torch.Tensor, torch.Tensor]],
    hp: HParams,
    mel_mean: torch.Tensor | None = None,
    mel_std: torch.Tensor | None = None,
    seed: int = 4321,
    cap_ratio: float = 2.0,
    batch_size: int = 16,
) -> FreeRun:
    """Decode every item free-running (see the module docstring); the model is left in its mode."""
    if not items:
        raise ValueError("free_run needs at least one sentence")
    if cap_ratio <= 0:
        raise ValueError(f"cap_ratio must be > 0, got {cap_ratio}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    devices = [device.index or 0] if device.type == "cuda" else []
    said: list[_Said] = []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, len(items), batch_size):
                said.extend(_decode_batch(model, items[start : start + batch_size], hp, mel_mean, mel_std, cap_ratio))
    finally:
        model.train(was_training)
    return _pooled(said, [int(mel.shape[1]) for _, mel in items], cap_ratio)


def _decode_batch(
    model: Tacotron2,
    items: Sequence[tuple[torch.Tensor, torch.Tensor]],
    hp: HParams,
    mel_mean: torch.Tensor | None,
    mel_std: torch.Tensor | None,
    cap_ratio: float,
) -> list[_Said]:
    """One batch decoded free-running and measured, in the items' order."""
    r = hp.n_frames_per_step
    batch = collate(items, r)  # sorts by text length, longest first (stable)
    order = torch.sort(torch.tensor([len(t) for t, _ in items]), descending=True, stable=True).indices.tolist()
    device = next(model.parameters()).device
    caps = _caps(batch.mel_lengths.tolist(), r, cap_ratio, hp.max_decoder_steps)
    out = model.infer(batch.text.to(device), batch.text_lengths.to(device), max(caps) // r, hp.gate_threshold)
    # infer runs until every sentence's gate fired (or the longest cap); each is cut at its own cap.
    lengths = _said_lengths(out.gate, caps, r, hp.gate_threshold)
    said: dict[int, _Said] = {}
    for row, index in enumerate(order):
        stopped, frames = lengths[row]
        steps = torch.tensor([frames // r])
        align, text_length = out.alignments[row : row + 1, : frames // r].cpu(), batch.text_lengths[row : row + 1]
        mel = _denormalised(out.mel_post[row, :, :frames].cpu(), mel_mean, mel_std)
        reference = _denormalised(items[index][1], mel_mean, mel_std)
        said[index] = _Said(
            stopped,
            frames,
            mel,
            mcd_dtw(mel.numpy(), reference.numpy()),
            diagonality(align, text_length, steps),
            focus_rate(align, text_length, steps),
        )
    return [said[i] for i in range(len(items))]


def _denormalised(mel: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    if mean is None or std is None:
        return mel.float()
    return mel.float() * std.unsqueeze(1) + mean.unsqueeze(1)


def _pooled(said: Sequence[_Said], reference_frames: list[int], cap_ratio: float) -> FreeRun:
    """Means over the sentences (each sentence counts once, whatever its length)."""
    n = len(said)
    pairs = list(zip(said, reference_frames, strict=True))
    metrics = {
        mx.FR_GATE_STOP_RATE: sum(s.stopped and s.frames * cap_ratio >= ref for s, ref in pairs) / n,
        mx.FR_LENGTH_RATIO: sum(s.frames / ref for s, ref in pairs) / n,
        mx.FR_MCD_DTW: sum(s.mcd_dtw for s in said) / n,
        mx.FR_DIAGONALITY: sum(s.diagonality for s in said) / n,
        mx.FR_FOCUS_RATE: sum(s.focus_rate for s in said) / n,
    }
    return FreeRun(metrics, [s.stopped for s in said], [s.frames for s in said], [s.mel for s in said])
