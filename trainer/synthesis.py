"""Listening samples: free-running synthesis from a checkpoint, vocoded with Griffin-Lim.

    python -m smart_tuner.trainer.synthesis CHECKPOINT "The quick brown fox." out.wav

A checkpoint carries its hyperparameters and the mel normalisation statistics, so no
dataset is needed: the text is normalised, the model decodes until its stop token fires
(or ``max_decoder_steps``), the mel is de-normalised and inverted by Griffin-Lim
(``trainer.audio.griffin_lim``). Griffin-Lim is for listening to progress, not a
vocoder for production.

Imports torch, numpy and ``trainer`` only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .audio import griffin_lim, save_wav
from .config import audio_config
from .hparams import HParams
from .model import Tacotron2
from .text import PUNCTUATION, SYMBOLS, UnknownSymbolError, normalize, text_to_ids


def encode_text(text: str) -> list[int]:
    """Raw text -> symbol ids, refusing what the model cannot read with a message that says why."""
    normalized = normalize(text)
    if not any("a" <= char <= "z" for char in normalized):
        raise ValueError(f"nothing to say in {text!r}: once normalised it has no letters to speak")
    try:
        return text_to_ids(normalized)
    except UnknownSymbolError as exc:
        raise ValueError(
            f"cannot say {text!r}: {exc.char!r} (position {exc.position} of the normalised text) is not one "
            f"of the model's symbols (letters a-z and {PUNCTUATION!r})"
        ) from None


@dataclass
class Synthesis:
    mel: torch.Tensor  # (n_mels, frames) log-mel, up to the stop
    stopped: bool  # the stop token fired before max_decoder_steps
    audio: torch.Tensor  # float samples in [-1, 1]


class Synthesizer:
    def __init__(self, model: Tacotron2, hp: HParams, mel_mean: torch.Tensor | None, mel_std: torch.Tensor | None):
        self.model, self.hp, self.mel_mean, self.mel_std = model.eval(), hp, mel_mean, mel_std

    @classmethod
    def from_checkpoint(cls, path: Path, sha256: str | None = None) -> Synthesizer:
        payload = ckpt.load(path, sha256)
        hp = HParams.from_dict(payload["hparams"])
        model = Tacotron2(hp, len(SYMBOLS))
        model.load_state_dict(payload.get("model") or payload["state_dict"])
        stats = payload.get("mel_stats") or {}
        return cls(model, hp, stats.get("mean"), stats.get("std"))

    @torch.no_grad()
    def synthesize(self, text: str, griffin_lim_iters: int = 32) -> Synthesis:
        """Decode ``text`` free-running; ValueError names empty text or an unknown character."""
        ids = torch.tensor([encode_text(text)], dtype=torch.long)
        out = self.model.infer(ids, torch.tensor([ids.size(1)]), self.hp.max_decoder_steps, self.hp.gate_threshold)
        stop = (torch.sigmoid(out.gate[0]) > self.hp.gate_threshold).nonzero()
        frames = int(stop[0]) + 1 if len(stop) else out.mel_post.size(2)
        mel = out.mel_post[0, :, :frames]
        if self.mel_mean is not None and self.mel_std is not None:
            mel = mel * self.mel_std.unsqueeze(1) + self.mel_mean.unsqueeze(1)
        return Synthesis(mel, bool(len(stop)), vocode(mel, self.hp, griffin_lim_iters))


def vocode(mel: torch.Tensor, hp: HParams, griffin_lim_iters: int = 32) -> torch.Tensor:
    """A de-normalised (n_mels, frames) log-mel -> audio in [-0.95, 0.95] by Griffin-Lim, for listening."""
    shortest = 2 * hp.filter_length // hp.hop_length  # shorter cannot be inverted: pad with silence
    if mel.size(1) < shortest:
        mel = torch.nn.functional.pad(mel, (0, shortest - mel.size(1)), value=float(mel.min()))
    audio = torch.from_numpy(griffin_lim(mel, audio_config(hp), n_iter=griffin_lim_iters))
    peak = float(audio.abs().max())
    return audio / peak * 0.95 if peak > 0 else audio


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m smart_tuner.trainer.synthesis", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("text")
    p.add_argument("out", type=Path, help="WAV file to write")
    p.add_argument("--iters", type=int, default=32, help="Griffin-Lim iterations")
    args = p.parse_args(argv)
    try:
        encode_text(args.text)  # refuse text the model cannot read before loading anything
        synth = Synthesizer.from_checkpoint(args.checkpoint)
        result = synth.synthesize(args.text, args.iters)
    except (ckpt.CheckpointError, ValueError) as exc:
        print(f"synthesis: error: {exc}", file=sys.stderr)
        return 2
    save_wav(args.out, result.audio, synth.hp.sampling_rate)
    seconds = result.audio.numel() / synth.hp.sampling_rate
    print(
        f"{args.out}: {seconds:.2f} s of audio, {result.mel.size(1)} frames, "
        f"{'stopped by the gate' if result.stopped else 'stopped at max_decoder_steps'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
