"""Datasets and batches: LJSpeech / NVIDIA filelist parsing, a mel cache, padding, resumable order.

The harness builds a batch as
``collate([dataset[i] for i in stream.next_indices()], n_frames_per_step)``;
``BatchStream.state_dict()`` goes into the checkpoint so that a resumed run sees
exactly the items an uninterrupted one would have seen.

Imports the standard library, numpy, torch, and ``.text`` / ``.audio`` only.
"""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import AudioConfig, MelSpectrogram, load_wav
from .fileio import write_atomic
from .text import UnknownSymbolError, normalize, text_to_ids


class DatasetError(ValueError):
    """A dataset file is unusable; the message starts with ``file:line:``."""


@dataclass(frozen=True, slots=True)
class Utterance:
    id: str
    text: str  # normalised
    wav_path: Path


# --- parsing -----------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _check_text(raw: str, where: str) -> str:
    text = normalize(raw)
    if not text:
        raise DatasetError(f"{where}: empty text")
    try:
        text_to_ids(text)
    except UnknownSymbolError as exc:
        raise DatasetError(
            f"{where}: character {exc.char!r} (position {exc.position} of the normalised text {text!r})"
            " is not in the symbol set"
        ) from None
    return text


def _add(utterances: list[Utterance], seen: dict[str, str], utt: Utterance, where: str) -> None:
    if utt.id in seen:
        raise DatasetError(f"{where}: duplicate id {utt.id!r} (first at {seen[utt.id]})")
    if not utt.wav_path.is_file():
        raise DatasetError(f"{where}: wav file {utt.wav_path} does not exist")
    seen[utt.id] = where
    utterances.append(utt)


def _rows(path: Path, counts: tuple[int, ...], layout: str) -> Iterator[tuple[str, list[str]]]:
    """``(file:line, fields)`` for every non-blank line, each with one of ``counts`` '|'-separated fields."""
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = line.split("|")
        if len(fields) not in counts:
            raise DatasetError(f"{where}: expected '{layout}', found {len(fields)} fields")
        yield where, fields


def load_ljspeech(root: Path) -> list[Utterance]:
    """``root/metadata.csv`` lines ``id|text|normalized`` (or ``id|text``); wavs in ``root/wavs/<id>.wav``."""
    metadata = Path(root) / "metadata.csv"
    utterances: list[Utterance] = []
    seen: dict[str, str] = {}
    for where, fields in _rows(metadata, (2, 3), "id|text|normalized"):
        utt_id = fields[0].strip()
        if not utt_id:
            raise DatasetError(f"{where}: empty id")
        # LJSpeech's normalised column still has capitals and quotes, so it is normalised again.
        raw = fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]
        text = _check_text(raw, where)
        _add(utterances, seen, Utterance(utt_id, text, Path(root) / "wavs" / f"{utt_id}.wav"), where)
    if not utterances:
        raise DatasetError(f"{metadata}: no utterances")
    return utterances


def load_filelist(path: Path, root: Path | None = None) -> list[Utterance]:
    """NVIDIA filelist lines ``wav_path|text``; relative paths resolve against ``root`` or the list's folder."""
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    utterances: list[Utterance] = []
    seen: dict[str, str] = {}
    for where, fields in _rows(path, (2,), "wav_path|text"):
        wav_field = fields[0].strip()
        if not wav_field:
            raise DatasetError(f"{where}: empty wav path")
        text = _check_text(fields[1], where)
        wav_path = Path(wav_field) if Path(wav_field).is_absolute() else base / wav_field
        _add(utterances, seen, Utterance(wav_path.stem, text, wav_path), where)
    if not utterances:
        raise DatasetError(f"{path}: no utterances")
    return utterances


def load_dataset(path: Path) -> list[Utterance]:
    """A directory with ``metadata.csv`` is LJSpeech; a file is a filelist."""
    path = Path(path)
    if path.is_dir():
        if not (path / "metadata.csv").is_file():
            raise DatasetError(f"{path}: a dataset directory needs a metadata.csv (LJSpeech layout)")
        return load_ljspeech(path)
    if path.is_file():
        return load_filelist(path)
    raise DatasetError(f"{path}: no such dataset directory or filelist")


def split(
    utterances: Sequence[Utterance], val_count: int, seed: int, test_count: int = 0
) -> tuple[list[Utterance], list[Utterance]]:
    """Deterministic (train, validation) split; both keep the input order.

    ``test_count`` more utterances, next in the same shuffled order, are held out of both: the
    run's test set (``held_out_slice``); with 0 the split is what it always was."""
    order = _order(utterances, val_count, seed, test_count)
    val_index = set(order[:val_count])
    held = set(order[val_count : val_count + test_count])
    train = [u for i, u in enumerate(utterances) if i not in val_index and i not in held]
    val = [u for i, u in enumerate(utterances) if i in val_index]
    return train, val


def held_out_slice(utterances: Sequence[Utterance], val_count: int, seed: int, test_count: int) -> list[Utterance]:
    """The utterances ``split`` holds out of training and validation with the same arguments."""
    order = _order(utterances, val_count, seed, test_count)
    held = set(order[val_count : val_count + test_count])
    return [u for i, u in enumerate(utterances) if i in held]


def _order(utterances: Sequence[Utterance], val_count: int, seed: int, test_count: int) -> list[int]:
    if not 0 <= val_count < len(utterances):
        raise ValueError(
            f"val_count must lie in [0, {len(utterances)}) for {len(utterances)} utterances, got {val_count}"
        )
    if test_count < 0 or val_count + test_count >= len(utterances):
        raise ValueError(
            f"val_count + test_count ({val_count} + {test_count}) must leave training utterances "
            f"of the {len(utterances)} there are"
        )
    order = list(range(len(utterances)))
    random.Random(seed).shuffle(order)
    return order


# --- features ----------------------------------------------------------------------------


class MelCache:
    """``cache.get(utt)`` -> (n_mels, frames) log-mel, computed once and kept as ``<key>/<id>.npy``.

    The folder is named by ``cfg.key()``, so other audio parameters never reuse these
    features; a wav newer than its cached mel is recomputed (a regenerated corpus).
    """

    def __init__(self, cache_dir: Path, cfg: AudioConfig) -> None:
        self.cfg = cfg.validate()
        self.dir = Path(cache_dir) / cfg.key()
        self._mel = MelSpectrogram(cfg)

    def path_for(self, utt: Utterance) -> Path:
        return self.dir / f"{utt.id}.npy"

    def get(self, utt: Utterance) -> torch.Tensor:
        cached = self.path_for(utt)
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            if cached.stat().st_mtime_ns >= utt.wav_path.stat().st_mtime_ns:
                mel = np.load(cached, allow_pickle=False)
                if mel.ndim == 2 and mel.shape[0] == self.cfg.n_mel_channels:
                    return torch.from_numpy(mel)
        return self._compute(utt, cached)

    def _compute(self, utt: Utterance, cached: Path) -> torch.Tensor:
        audio = load_wav(utt.wav_path, sampling_rate=self.cfg.sampling_rate)
        with torch.no_grad():
            mel: torch.Tensor = self._mel(torch.from_numpy(audio)).contiguous()
        self.dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, mel.numpy(), allow_pickle=False)
        write_atomic(cached, buf.getvalue())
        return mel

    def warm(self, utterances: Sequence[Utterance]) -> None:
        """Compute every missing mel now, so that training steps only read files."""
        for utt in utterances:
            self.get(utt)


class TTSDataset(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``dataset[i]`` -> (text ids LongTensor (N,), log-mel FloatTensor (n_mels, T))."""

    def __init__(self, utterances: Sequence[Utterance], mels: MelCache) -> None:
        self.utterances = list(utterances)
        self.mels = mels
        self._text_ids = [torch.tensor(text_to_ids(u.text), dtype=torch.long) for u in self.utterances]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._text_ids[index], self.mels.get(self.utterances[index])


# --- batches -----------------------------------------------------------------------------


@dataclass
class Batch:
    text: torch.Tensor  # (B, N) long, 0-padded, longest text first
    text_lengths: torch.Tensor  # (B,) long
    mel: torch.Tensor  # (B, n_mels, T) float, T a multiple of n_frames_per_step
    gate: torch.Tensor  # (B, T) float, 1.0 from each item's last real frame on
    mel_lengths: torch.Tensor  # (B,) long

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            *(
                t.to(device, non_blocking=True)
                for t in (self.text, self.text_lengths, self.mel, self.gate, self.mel_lengths)
            )
        )


def collate(items: Sequence[tuple[torch.Tensor, torch.Tensor]], n_frames_per_step: int) -> Batch:
    """NVIDIA's TextMelCollate, with a stable sort so equal text lengths keep their order."""
    if not items:
        raise ValueError("collate needs at least one item")
    if n_frames_per_step < 1:
        raise ValueError(f"n_frames_per_step must be >= 1, got {n_frames_per_step}")
    text_lengths, order = torch.sort(
        torch.tensor([len(text) for text, _ in items], dtype=torch.long), descending=True, stable=True
    )
    n_mels = items[0][1].shape[0]
    max_frames = max(mel.shape[1] for _, mel in items)
    max_frames += -max_frames % n_frames_per_step
    text = torch.zeros(len(items), int(text_lengths[0]), dtype=torch.long)
    mel_padded = torch.zeros(len(items), n_mels, max_frames)
    gate = torch.zeros(len(items), max_frames)
    mel_lengths = torch.zeros(len(items), dtype=torch.long)
    for row, index in enumerate(order.tolist()):
        ids, mel = items[index]
        text[row, : len(ids)] = ids
        mel_padded[row, :, : mel.shape[1]] = mel
        gate[row, mel.shape[1] - 1 :] = 1.0
        mel_lengths[row] = mel.shape[1]
    return Batch(text, text_lengths, mel_padded, gate, mel_lengths)


class BatchStream:
    """Deterministic, resumable batch order: epoch ``e`` visits ``randperm(n, seed + e)``.

    ``next_indices()`` returns the next batch; ``state_dict()`` / ``load_state_dict()``
    carry (epoch, position) through a checkpoint; ``set_batch_size()`` mid-epoch keeps
    the position, so no item is seen twice in an epoch. With ``drop_last`` the tail
    shorter than a batch is skipped, as a DataLoader would.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, drop_last: bool = True) -> None:
        if n_items < 1:
            raise ValueError(f"BatchStream needs at least one item, got n_items={n_items}")
        self.n_items = n_items
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0
        self._order: list[int] = []
        self._order_epoch = -1
        self.set_batch_size(batch_size)

    def set_batch_size(self, batch_size: int) -> None:
        if batch_size < 1 or (self.drop_last and batch_size > self.n_items):
            limit = f"1..{self.n_items}" if self.drop_last else ">= 1"
            raise ValueError(f"batch_size must be {limit} for {self.n_items} items, got {batch_size}")
        self.batch_size = batch_size

    def _permutation(self) -> list[int]:
        if self._order_epoch != self.epoch:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            self._order = torch.randperm(self.n_items, generator=generator).tolist()
            self._order_epoch = self.epoch
        return self._order

    def next_indices(self) -> list[int]:
        remaining = self.n_items - self.position
        if remaining <= 0 or (self.drop_last and remaining < self.batch_size):
            self.epoch += 1
            self.position = 0
        batch = self._permutation()[self.position : self.position + self.batch_size]
        self.position += len(batch)
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for name in ("epoch", "position", "seed", "batch_size"):
            value = state.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or (value < 0 and name != "seed"):
                raise ValueError(f"BatchStream state: {name} must be a non-negative integer, got {value!r}")
        if state["position"] > self.n_items:
            raise ValueError(f"BatchStream state: position {state['position']} exceeds the {self.n_items} items")
        self.set_batch_size(state["batch_size"])
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._order_epoch = -1
