"""The trainer's configuration (where the data is, where outputs go, which device) and its data in memory.

    config = TrainerConfig(dataset="demo", output_dir=Path("runs/x/trainer"))
    data = TrainingData.build(config, hp)     # corpus, split, mels (cached on disk and held in memory)

``dataset`` is ``"demo"`` (the bundled corpus, synthesised at first use), ``"tiny"``
(a dozen short utterances, for tests) or a path: an LJSpeech folder or an NVIDIA
filelist. The mels of the whole corpus stay in memory (the demo's are ~20 MB), so a
training step never touches the disk; validation batches are built once per
reduction factor, in a fixed order.

Imports torch and ``trainer`` only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .audio import AudioConfig
from .corpus import ensure_demo_corpus, make_tiny_corpus
from .data import Batch, MelCache, Utterance, collate, load_dataset, split
from .hparams import HParams
from .text import text_to_ids


@dataclass(frozen=True)
class TrainerConfig:
    dataset: str | Path = "demo"
    val_dataset: Path | None = None  # a separate validation set (NVIDIA's validation_files); else a split
    demo_utterances: int = 300
    val_count: int = 16
    val_batch_size: int = 16
    split_seed: int = 0
    output_dir: Path = Path("trainer-out")
    cache_dir: Path | None = None  # mel cache; default: <data_dir or ~/.cache/smart_tuner>/mels/<corpus hash>
    data_dir: Path | None = None  # where "demo"/"tiny" corpora are made; default: the user cache
    device: str = "auto"
    threads: int | None = None
    val_seed: int = 4321  # validation draws prenet dropout from this seed, the same for every candidate

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def audio_config(hp: HParams) -> AudioConfig:
    return AudioConfig(
        sampling_rate=hp.sampling_rate, filter_length=hp.filter_length, hop_length=hp.hop_length,
        win_length=hp.win_length, n_mel_channels=hp.n_mel_channels, mel_fmin=hp.mel_fmin, mel_fmax=hp.mel_fmax,
    )  # fmt: skip


def resolve_corpus(config: TrainerConfig) -> Path:
    if config.dataset == "demo":
        root = config.data_dir / "demo-corpus" if config.data_dir else None
        return ensure_demo_corpus(root, n_utterances=config.demo_utterances)
    if config.dataset == "tiny":
        base = config.data_dir or Path.home() / ".cache" / "smart_tuner"
        return make_tiny_corpus(base / "tiny-corpus")
    return Path(config.dataset)


def default_cache_dir(config: TrainerConfig, corpus: Path) -> Path:
    """Mels go beside our own data, never into a user's dataset folder (it may be read-only or shared)."""
    base = config.data_dir or Path.home() / ".cache" / "smart_tuner"
    return base / "mels" / hashlib.sha256(str(corpus.resolve()).encode()).hexdigest()[:12]


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
            train_utts, val_utts = split(utterances, config.val_count, config.split_seed)
        cache = MelCache(config.cache_dir or default_cache_dir(config, corpus), audio_config(hp))
        cache.warm(utterances)

        def items(utts: list[Utterance]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [(torch.tensor(text_to_ids(u.text), dtype=torch.long), cache.get(u)) for u in utts]

        ident = hashlib.sha256()
        for u in utterances:
            ident.update(f"{u.id}|{u.text}\n".encode())
        ident.update(f"{config.val_count}|{config.split_seed}|{config.val_dataset is not None}".encode())
        data = cls(train_utts, val_utts, items(train_utts), items(val_utts), config.val_batch_size,
                   ident.hexdigest()[:16])  # fmt: skip
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
