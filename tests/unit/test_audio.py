"""Audio: config validation, WAV I/O and its errors, the Slaney filterbank, log-mel, Griffin-Lim."""

from __future__ import annotations

import dataclasses
import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from smart_tuner.trainer.audio import (
    LOG_FLOOR,
    AudioConfig,
    AudioError,
    MelSpectrogram,
    compress,
    griffin_lim,
    hz_to_mel,
    load_wav,
    mel_filterbank,
    mel_to_hz,
    read_wav,
    save_wav,
)

CFG = AudioConfig()


def _sine(freq_hz: float, seconds: float, amplitude: float = 0.5, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _write_pcm(path: Path, frames: bytes, width: int, channels: int = 1, rate: int = 22050) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames)


# --- config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sampling_rate": 0}, "sampling_rate"),
        ({"hop_length": -1}, "hop_length"),
        ({"n_mel_channels": 2.5}, "n_mel_channels"),
        ({"win_length": 2048}, "win_length"),
        ({"mel_fmin": 9000.0}, "mel_fmin"),
        ({"mel_fmax": 12000.0}, "mel_fmax"),
    ],
)
def test_config_validate_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"AudioConfig.{field}"):
        dataclasses.replace(CFG, **changes).validate()  # type: ignore[arg-type]


def test_config_key_follows_every_field() -> None:
    assert CFG.validate() is CFG
    assert AudioConfig().key() == CFG.key() and len(CFG.key()) == 12
    keys = {dataclasses.replace(CFG, **{f.name: getattr(CFG, f.name) + 1}).key() for f in dataclasses.fields(CFG)}
    assert len(keys) == len(dataclasses.fields(CFG)) and CFG.key() not in keys


# --- WAV I/O ---------------------------------------------------------------------------


def test_wav_round_trip_is_16_bit_exact_and_clips(tmp_path: Path) -> None:
    audio = np.concatenate([_sine(440, 0.1), np.array([1.7, -3.0, 0.0], dtype=np.float32)])
    path = tmp_path / "a.wav"
    save_wav(path, audio, 22050)
    back, rate = read_wav(path)
    assert rate == 22050 and back.dtype == np.float32 and back.shape == audio.shape
    assert np.abs(back[:-3] - audio[:-3]).max() < 1.5 / 32767
    assert back[-3] == pytest.approx(32767 / 32768) and back[-2] == pytest.approx(-32767 / 32768)
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # no temp file left behind
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)


def test_save_wav_accepts_a_tensor_and_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    save_wav(path, np.zeros(10, dtype=np.float32), 16000)
    save_wav(path, torch.full((5,), 0.5), 22050)
    back, rate = read_wav(path)
    assert rate == 22050 and back.shape == (5,) and np.allclose(back, 0.5, atol=1e-4)


@pytest.mark.parametrize(
    ("width", "frames", "expected"),
    [
        (1, bytes([128, 255, 0]), [0.0, 127 / 128, -1.0]),
        (2, struct.pack("<3h", 0, 16384, -32768), [0.0, 0.5, -1.0]),
        (3, b"\x00\x00\x00" + b"\x00\x00\x40" + b"\x00\x00\x80", [0.0, 0.5, -1.0]),
        (4, struct.pack("<3i", 0, 1 << 30, -(1 << 31)), [0.0, 0.5, -1.0]),
    ],
    ids=["8bit", "16bit", "24bit", "32bit"],
)
def test_read_wav_pcm_widths(tmp_path: Path, width: int, frames: bytes, expected: list[float]) -> None:
    _write_pcm(tmp_path / "w.wav", frames, width)
    audio, _ = read_wav(tmp_path / "w.wav")
    np.testing.assert_allclose(audio, expected, atol=1e-6)


def test_read_wav_downmixes_stereo(tmp_path: Path) -> None:
    _write_pcm(tmp_path / "s.wav", struct.pack("<4h", 16384, 0, -16384, -16384), 2, channels=2)
    audio, _ = read_wav(tmp_path / "s.wav")
    np.testing.assert_allclose(audio, [0.25, -0.5])


def test_load_wav_refuses_another_rate(tmp_path: Path) -> None:
    save_wav(tmp_path / "a.wav", _sine(440, 0.05, rate=16000), 16000)
    assert load_wav(tmp_path / "a.wav").shape == (800,)
    with pytest.raises(AudioError, match=r"a\.wav: sample rate is 16000 Hz .* expects 22050 Hz"):
        load_wav(tmp_path / "a.wav", sampling_rate=22050)


def _float_wav() -> bytes:
    fmt = struct.pack("<HHIIHH", 3, 1, 22050, 22050 * 4, 4, 32)  # WAVE_FORMAT_IEEE_FLOAT
    data = struct.pack("<2f", 0.1, 0.2)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        (b"this is not audio at all", "not a readable PCM WAV"),
        (b"", "not a readable PCM WAV"),
        (_float_wav(), "not a readable PCM WAV"),
    ],
    ids=["missing", "text", "empty", "float"],
)
def test_bad_files_raise_audio_error_naming_path(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError, match=problem) as info:
        read_wav(path)
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)


def test_truncated_wav_says_how_much_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    save_wav(path, _sine(440, 0.1), 22050)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated: the header announces 2205 frames, the file holds 1705"):
        read_wav(path)


# --- mel features ----------------------------------------------------------------------


def test_slaney_mel_scale() -> None:
    hz = np.array([0.0, 200.0, 1000.0, 8000.0])
    np.testing.assert_allclose(hz_to_mel(hz), [0.0, 3.0, 15.0, 15.0 + math.log(8) * 27 / math.log(6.4)])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(np.linspace(0, 11025, 50))), np.linspace(0, 11025, 50))


def test_filterbank_rows_have_unit_area_and_rising_peaks() -> None:
    fb = mel_filterbank(CFG)
    assert fb.shape == (80, 513) and fb.dtype == np.float32 and (fb >= 0).all()
    bin_hz = CFG.sampling_rate / CFG.filter_length
    # Slaney normalisation: each triangle integrates to 1 over frequency.
    np.testing.assert_allclose(fb.sum(axis=1) * bin_hz, 1.0, atol=0.1)
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] * bin_hz < CFG.mel_fmax
    centres = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(8000.0)), 82))[1:-1]
    assert np.abs(peaks * bin_hz - centres).max() <= bin_hz
    assert fb[:, round(CFG.mel_fmax / bin_hz) + 1 :].max() == 0.0  # nothing above fmax


def test_compression_floor() -> None:
    x = torch.tensor([0.0, 1e-9, LOG_FLOOR, 1.0, math.e])
    np.testing.assert_allclose(compress(x).numpy(), [math.log(1e-5)] * 3 + [0.0, 1.0], rtol=1e-6)


def test_mel_shapes_for_known_lengths() -> None:
    mel = MelSpectrogram(CFG)
    single = mel(torch.from_numpy(_sine(440, 1.0)))
    assert single.shape == (80, 1 + 22050 // 256) and single.dtype == torch.float32
    batch = mel(torch.zeros(2, 256 * 10))
    assert batch.shape == (2, 80, 11)
    assert torch.all(batch == math.log(LOG_FLOOR))  # silence sits exactly on the floor
    assert not list(mel.state_dict())  # buffers stay out of model checkpoints


def test_mel_peaks_in_the_band_of_the_tone() -> None:
    mel = MelSpectrogram(CFG)(torch.from_numpy(_sine(1000.0, 0.5)))
    centres = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(8000.0)), 82))[1:-1]
    loudest = int(mel[:, 5:-5].mean(dim=1).argmax())
    assert abs(centres[loudest] - 1000.0) < 60.0


def test_mel_rejects_bad_input() -> None:
    mel = MelSpectrogram(CFG)
    with pytest.raises(ValueError, match=r"magnitude 2\.0"):
        mel(torch.full((2048,), 2.0))
    with pytest.raises(ValueError, match="too short"):
        mel(torch.zeros(100))
    with pytest.raises(ValueError, match=r"\(T,\) or \(B, T\)"):
        mel(torch.zeros(1, 1, 4096))


def test_griffin_lim_reconstructs_audio_of_the_right_length() -> None:
    audio = torch.from_numpy(_sine(440, 0.5) + _sine(1250, 0.5, amplitude=0.2))
    spec = MelSpectrogram(CFG)
    mel = spec(audio)
    out = griffin_lim(mel, CFG, n_iter=16)
    assert out.dtype == np.float32 and out.shape == ((mel.shape[1] - 1) * CFG.hop_length,)
    assert np.isfinite(out).all() and np.abs(out).max() > 0.05
    # Its log-mel resembles the input's where there is energy.
    again = spec(torch.from_numpy(np.clip(out, -1, 1)))[:, 2:-2]
    target = mel[:, 2:-2]
    loud = target > target.max() - 6
    assert float((again[loud] - target[loud]).abs().mean()) < 1.0
    assert np.array_equal(out, griffin_lim(mel, CFG, n_iter=16))  # seeded phase: reproducible


def test_griffin_lim_rejects_what_it_cannot_invert() -> None:
    with pytest.raises(ValueError, match=r"expects \(80, frames\) log-mel, got shape \(40, 10\)"):
        griffin_lim(torch.zeros(40, 10), CFG)
    with pytest.raises(ValueError, match="needs more frames than 2"):
        griffin_lim(torch.zeros(80, 2), CFG)
