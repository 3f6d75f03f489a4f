"""Audio I/O and features: WAV read/write, NVIDIA-compatible log-mel spectrograms, Griffin-Lim.

``MelSpectrogram`` reproduces NVIDIA tacotron2's ``TacotronSTFT.mel_spectrogram``
(periodic Hann window, reflect-padded STFT magnitude, Slaney mel filterbank as
``librosa.filters.mel(htk=False, norm="slaney")``, ``log(clamp(x, 1e-5))``), so
features match what users' existing recipes produce. ``griffin_lim`` turns such a
mel back into rough audio for listening to validation samples.

Imports the standard library, numpy and torch only (no librosa, no soundfile).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from .fileio import write_atomic

LOG_FLOOR = 1e-5  # NVIDIA's dynamic_range_compression clip value


class AudioError(ValueError):
    """A WAV file cannot be used; the message names the path and the problem."""


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """STFT and mel parameters; the defaults are NVIDIA tacotron2's LJSpeech ones."""

    sampling_rate: int = 22050
    filter_length: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mel_channels: int = 80
    mel_fmin: float = 0.0
    mel_fmax: float = 8000.0

    def validate(self) -> AudioConfig:
        """Raise ValueError naming the first bad field; return self for chaining."""
        for name in ("sampling_rate", "filter_length", "hop_length", "win_length", "n_mel_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"AudioConfig.{name} must be a positive integer, got {value!r}")
        if self.win_length > self.filter_length:
            raise ValueError(
                f"AudioConfig.win_length ({self.win_length}) must not exceed filter_length ({self.filter_length})"
            )
        if not 0.0 <= self.mel_fmin < self.mel_fmax:
            raise ValueError(f"AudioConfig.mel_fmin must lie in [0, mel_fmax), got {self.mel_fmin!r}")
        if self.mel_fmax > self.sampling_rate / 2:
            raise ValueError(
                f"AudioConfig.mel_fmax ({self.mel_fmax}) exceeds the Nyquist frequency ({self.sampling_rate / 2})"
            )
        return self

    def key(self) -> str:
        """Short digest of every field: the mel cache directory name."""
        fields = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(fields.encode()).hexdigest()[:12]


# --- WAV I/O -----------------------------------------------------------------------------


def _pcm_to_float(data: bytes, width: int) -> npt.NDArray[np.float32]:
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float32) / float(1 << 23)
    return (np.frombuffer(data, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)


def read_wav(path: Path | str) -> tuple[npt.NDArray[np.float32], int]:
    """Read PCM WAV (8/16/24/32-bit, any channel count) as float32 mono in [-1, 1], with its rate."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate, n_frames = (
                wav.getnchannels(),
                wav.getsampwidth(),
                wav.getframerate(),
                wav.getnframes(),
            )
            data = wav.readframes(n_frames)
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"{path}: not a readable PCM WAV file ({exc or 'file ends early'})") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if width not in (1, 2, 3, 4):
        raise AudioError(f"{path}: unsupported sample width of {width * 8} bits")
    frame_bytes = channels * width
    if len(data) < n_frames * frame_bytes:
        raise AudioError(
            f"{path}: truncated: the header announces {n_frames} frames, the file holds {len(data) // frame_bytes}"
        )
    audio = _pcm_to_float(data, width)
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return audio, rate


def load_wav(path: Path | str, sampling_rate: int | None = None) -> npt.NDArray[np.float32]:
    """``read_wav`` without the rate; if ``sampling_rate`` is given, the file must have it."""
    audio, rate = read_wav(path)
    if sampling_rate is not None and rate != sampling_rate:
        raise AudioError(f"{path}: sample rate is {rate} Hz but the audio config expects {sampling_rate} Hz")
    return audio


def save_wav(path: Path | str, audio: npt.NDArray[np.floating] | torch.Tensor, sampling_rate: int) -> None:
    """Write mono 16-bit PCM, clipping to [-1, 1]; atomic (a temp file renamed into place)."""
    path = Path(path)
    samples = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if samples.ndim != 1:
        raise ValueError(f"{path}: save_wav needs 1-D mono audio, got shape {samples.shape}")
    pcm = (np.clip(np.nan_to_num(samples.astype(np.float64)), -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sampling_rate)
        wav.writeframes(pcm.tobytes())
    write_atomic(path, buf.getvalue())


# --- mel features ------------------------------------------------------------------------

_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz at 200/3 Hz per mel, logarithmic above
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's Auditory Toolbox mel scale (librosa ``htk=False``)."""
    linear = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, linear)


def mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Inverse of ``hz_to_mel``."""
    linear = mel * _F_SP
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, linear)


def mel_filterbank(cfg: AudioConfig) -> npt.NDArray[np.float32]:
    """(n_mels, filter_length // 2 + 1) triangles, area-normalised: ``librosa.filters.mel`` with norm="slaney"."""
    fft_hz = np.linspace(0.0, cfg.sampling_rate / 2, cfg.filter_length // 2 + 1)
    mel_edges = np.linspace(
        hz_to_mel(np.array(cfg.mel_fmin)), hz_to_mel(np.array(cfg.mel_fmax)), cfg.n_mel_channels + 2
    )
    edges_hz = mel_to_hz(mel_edges)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    # Slaney normalisation: each triangle has unit area, so wide high bands are not louder.
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def compress(magnitude: torch.Tensor) -> torch.Tensor:
    """NVIDIA's dynamic_range_compression: ``log(clamp(x, min=1e-5))``."""
    return torch.log(torch.clamp(magnitude, min=LOG_FLOOR))


def decompress(log_magnitude: torch.Tensor) -> torch.Tensor:
    """Inverse of ``compress`` (above the floor)."""
    return torch.exp(log_magnitude)


class MelSpectrogram(torch.nn.Module):
    """``mel = MelSpectrogram(cfg)(audio)``: (T,) -> (n_mels, 1 + T // hop), or (B, T) -> (B, n_mels, frames)."""

    window: torch.Tensor
    mel_basis: torch.Tensor

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        # Buffers, not parameters: they follow .to(device) but stay out of state_dict.
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=True), persistent=False)
        self.register_buffer("mel_basis", torch.from_numpy(mel_filterbank(cfg)), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() not in (1, 2):
            raise ValueError(f"MelSpectrogram expects (T,) or (B, T) audio, got shape {tuple(audio.shape)}")
        if audio.shape[-1] <= self.cfg.filter_length // 2:
            raise ValueError(
                f"audio of {audio.shape[-1]} samples is too short for filter_length {self.cfg.filter_length}"
            )
        peak = float(audio.abs().max()) if audio.numel() else 0.0
        if not peak <= 1.0:  # also catches NaN
            raise ValueError(f"audio must lie in [-1, 1], found a sample of magnitude {peak}")
        spec = torch.stft(
            audio.float(),
            n_fft=self.cfg.filter_length,
            hop_length=self.cfg.hop_length,
            win_length=self.cfg.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        return compress(torch.matmul(self.mel_basis, spec.abs())).float()


@functools.lru_cache(maxsize=4)
def _inverse_filterbank(cfg: AudioConfig) -> torch.Tensor:
    # Cached: the first LAPACK call in a process costs about a second here.
    inverse: torch.Tensor = torch.linalg.pinv(torch.from_numpy(mel_filterbank(cfg)))
    return inverse


def griffin_lim(
    mel: torch.Tensor, cfg: AudioConfig, n_iter: int = 32, power: float = 1.5, seed: int = 0
) -> npt.NDArray[np.float32]:
    """Log-mel (n_mels, frames) -> float32 audio of (frames - 1) * hop samples.

    The pseudo-inverse filterbank gives a rough linear magnitude; ``power`` > 1
    sharpens it (1.0 disables); the phase starts from ``seed`` so output is reproducible.
    """
    if mel.dim() != 2 or mel.shape[0] != cfg.n_mel_channels:
        raise ValueError(f"griffin_lim expects ({cfg.n_mel_channels}, frames) log-mel, got shape {tuple(mel.shape)}")
    length = (mel.shape[1] - 1) * cfg.hop_length
    if length <= cfg.filter_length // 2:
        raise ValueError(f"griffin_lim needs more frames than {mel.shape[1]} for filter_length {cfg.filter_length}")
    with torch.no_grad():
        linear = torch.clamp(_inverse_filterbank(cfg) @ decompress(mel.detach().cpu().float()), min=0.0)
        # Sharpening changes the scale too; keep the energy of the unsharpened estimate.
        magnitude = linear**power
        magnitude *= torch.linalg.vector_norm(linear) / torch.clamp(torch.linalg.vector_norm(magnitude), min=1e-12)
        window = torch.hann_window(cfg.win_length, periodic=True)

        def stft(audio: torch.Tensor) -> torch.Tensor:
            return torch.stft(
                audio,
                cfg.filter_length,
                cfg.hop_length,
                cfg.win_length,
                window,
                pad_mode="reflect",
                return_complex=True,
            )

        def istft(spec: torch.Tensor) -> torch.Tensor:
            return torch.istft(spec, cfg.filter_length, cfg.hop_length, cfg.win_length, window, length=length)

        generator = torch.Generator().manual_seed(seed)
        audio = istft(magnitude * torch.exp(2j * math.pi * torch.rand(magnitude.shape, generator=generator)))
        for _ in range(n_iter):
            rebuilt = stft(audio)
            audio = istft(magnitude * rebuilt / torch.clamp(rebuilt.abs(), min=1e-8))
    return audio.numpy().astype(np.float32)
