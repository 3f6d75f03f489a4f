"""The trainer's data in memory: the corpus split, its mels, the validation batches.

    data = TrainingData.build(config, hp)     # corpus, split, mels (cached on disk and held in memory)

The mels of the whole corpus stay in memory (the demo's are ~20 MB), so a
training step never touches the disk; validation batches are built once per
reduction factor, in a fixed order.

Imports torch and ``trainer`` only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from .config import TrainerConfig, audio_config, default_cache_dir, resolve_corpus
from .data import Batch, MelCache, Utterance, collate, load_dataset, split
from .hparams import HParams
from .text import text_to_ids


@dataclass
class TrainingData:
    train_utts: list[Utterance]
    val_utts: list[Utterance]
    train: list[tuple[torch.Tensor, torch.Tensor]]
    val: list[tuple[torch.Tensor, torch.Tensor]]
    val_batch_size: int
    dataset_id: str
    mel_mean: torch.Tensor | None = None  # (n_mels,) when the mels are normalised, else None
    mel_std: torch.Tensor | None = None
    _val_batches: dict[int, list[Batch]] = field(default_factory=dict)

    @classmethod
    def build(cls, config: TrainerConfig, hp: HParams) -> TrainingData:
        corpus = resolve_corpus(config)
        utterances = load_dataset(corpus)
        if config.val_dataset is not None:
            train_utts, val_utts = utterances, load_dataset(config.val_dataset)
            utterances = train_utts + val_utts
        else:
            train_utts, val_utts = split(utterances, config.val_count, config.split_seed, config.test_count)
        cache = MelCache(config.cache_dir or default_cache_dir(config, corpus), audio_config(hp))
        cache.warm(utterances)

        def items(utts: list[Utterance]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [(torch.tensor(text_to_ids(u.text), dtype=torch.long), cache.get(u)) for u in utts]

        ident = hashlib.sha256()
        for u in utterances:
            ident.update(f"{u.id}|{u.text}\n".encode())
        ident.update(f"{config.val_count}|{config.split_seed}|{config.val_dataset is not None}".encode())
        if config.test_count:  # a held-out test slice changes what is trained on (none: the id as it was)
            ident.update(f"|test={config.test_count}".encode())
        data = cls(
            train_utts, val_utts, items(train_utts), items(val_utts), config.val_batch_size, ident.hexdigest()[:16]
        )
        if hp.mel_normalize:
            data._normalize()
        return data

    def _normalize(self) -> None:
        """Per-band mean and std over every training frame; applied to train and validation mels alike.

        Raw log-mels span about -11.5 (the log floor) to +2; a prenet and an output layer
        initialised for unit-scale values learn much faster on standardised ones.
        """
        frames = torch.cat([mel for _, mel in self.train], dim=1).double()
        mean, std = frames.mean(dim=1), frames.std(dim=1).clamp(min=1e-3)
        self.mel_mean, self.mel_std = mean.float(), std.float()
        scale = (self.mel_mean.unsqueeze(1), self.mel_std.unsqueeze(1))
        self.train = [(text, (mel - scale[0]) / scale[1]) for text, mel in self.train]
        self.val = [(text, (mel - scale[0]) / scale[1]) for text, mel in self.val]

    def denormalize(self, mel: torch.Tensor) -> torch.Tensor:
        """Model output (B, n_mels, T) or (n_mels, T) back to log-mel (for Griffin-Lim)."""
        if self.mel_mean is None or self.mel_std is None:
            return mel
        return mel * self.mel_std.to(mel.device).unsqueeze(1) + self.mel_mean.to(mel.device).unsqueeze(1)

    def train_batch(self, indices: list[int], r: int) -> Batch:
        return collate([self.train[i] for i in indices], r)

    def val_batches(self, r: int) -> list[Batch]:
        if r not in self._val_batches:
            n = self.val_batch_size
            self._val_batches[r] = [collate(self.val[i : i + n], r) for i in range(0, len(self.val), n)]
        return self._val_batches[r]
