"""The trainer's configuration: where the data is, where outputs go, which device.

    config = TrainerConfig(dataset="demo", output_dir=Path("runs/x/trainer"))
    corpus = resolve_corpus(config)           # the folder of an LJSpeech-layout corpus

``dataset`` is ``"demo"`` (the bundled corpus, synthesised at first use), ``"tiny"``
(a dozen short utterances, for tests) or a path: an LJSpeech folder or an NVIDIA
filelist. The data itself is loaded by ``training_data``.

Imports torch and ``trainer`` only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .audio import AudioConfig
from .corpus import ensure_demo_corpus, make_tiny_corpus
from .hparams import HParams


@dataclass(frozen=True)
class TrainerConfig:
    dataset: str | Path = "demo"
    val_dataset: Path | None = None  # a separate validation set (NVIDIA's validation_files); else a split
    demo_utterances: int = 300
    val_count: int = 16
    val_batch_size: int = 16
    split_seed: int = 0
    test_count: int = 0  # utterances held out of training and validation: the run's test set (data.held_out_slice)
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
        sampling_rate=hp.sampling_rate,
        filter_length=hp.filter_length,
        hop_length=hp.hop_length,
        win_length=hp.win_length,
        n_mel_channels=hp.n_mel_channels,
        mel_fmin=hp.mel_fmin,
        mel_fmax=hp.mel_fmax,
    )


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
