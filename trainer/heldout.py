"""Held-out evaluation of a checkpoint: validation's measures on utterances no decision saw.

    metrics = evaluate_checkpoint(Path("run/trainer/checkpoints/r5-t9-g0.pt"), Path("test-corpus"))
    metrics["val_objective"], metrics["fr_gate_stop_rate"]

    python -m smart_tuner.trainer.heldout CHECKPOINT DATASET [--samples DIR]   # JSON, and WAVs to listen to
    python -m smart_tuner.trainer.heldout CHECKPOINT TRAIN_DATASET --held-out 16,32,0   # its held-out slice

The checkpoint carries its hyperparameters and the mel normalisation of the data it was
trained on, so only the utterances are needed (an LJSpeech folder or an NVIDIA filelist).
The measures are validation's (``trainer/evaluation.py``), under the same names:
teacher-forced ``val_*``, the alignment metrics, ``gate_accuracy`` and the free-running
``fr_*``; with averaged weights in the checkpoint, also the averaged model's as ``ema_*``.
The prenet's dropout draws from ``seed`` in a forked RNG, as validation's does, so two
checkpoints are measured on the same draws; evaluations in one process take turns (that RNG
is the process's), so threads may call this.

What a benchmark or an end-of-run report shows as the *test* result; nothing in the tuner
reads it. With ``samples_dir`` (``--samples``), each sentence as the model said it
free-running is written there as a WAV (Griffin-Lim: for listening, not a vocoder), named
by the utterance id, with ``samples.json`` listing text, length and whether it stopped.

Imports torch and ``trainer`` only.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .audio import save_wav
from .config import TrainerConfig, audio_config, default_cache_dir, resolve_corpus
from .corpus import CorpusError, ensure_demo_test_set
from .data import DatasetError, MelCache, Utterance, collate, held_out_slice, load_dataset
from .evaluation import measure, swapped_weights
from .free_running import FreeRun, free_run
from .hparams import HParamError, HParams
from .loss import Tacotron2Loss
from .model import Tacotron2
from .synthesis import vocode
from .text import SYMBOLS, text_to_ids

DEMO_TEST = "demo-test"  # the dataset argument naming the demo's own test sentences (corpus.ensure_demo_test_set)
# The prenet's dropout draws from torch's process-wide RNG (seeded inside fork_rng), and building a
# model draws from it too: two evaluations in two threads of one process would take each other's
# draws and measure each other's noise. One at a time, from loading to the last measure.
_ONE_AT_A_TIME = threading.Lock()


@torch.no_grad()
def evaluate_checkpoint(
    path: Path,
    dataset: Path,
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    seed: int = 4321,
    batch_size: int = 16,
    samples_dir: Path | None = None,
    held_out: tuple[int, int, int] | None = None,
) -> dict[str, float]:
    """Validation's metrics of the checkpoint at ``path`` on ``dataset`` (see the module docstring).

    ``held_out=(val_count, test_count, split_seed)``: ``dataset`` is what the model trained on, and
    the utterances measured are the test slice the trainer held out of it (``data.held_out_slice``)."""
    with _ONE_AT_A_TIME:
        return _evaluate(path, dataset, sha256, cache_dir, seed, batch_size, samples_dir, held_out)


def _evaluate(
    path: Path,
    dataset: Path,
    sha256: str | None,
    cache_dir: Path | None,
    seed: int,
    batch_size: int,
    samples_dir: Path | None,
    held_out: tuple[int, int, int] | None = None,
) -> dict[str, float]:
    payload = ckpt.load(path, sha256)
    hp = HParams.from_dict(payload["hparams"])
    model = Tacotron2(hp, len(SYMBOLS))
    model.load_state_dict(payload["model"])
    model.eval()
    stats = payload.get("mel_stats") or {}
    mean, std = stats.get("mean"), stats.get("std")
    utterances = measured_utterances(dataset, held_out)
    cache = MelCache(cache_dir or default_cache_dir(TrainerConfig(), Path(dataset)), audio_config(hp))
    items = []
    for utt in utterances:
        mel = cache.get(utt)
        if mean is not None and std is not None:
            mel = (mel - mean.unsqueeze(1)) / std.unsqueeze(1)
        items.append((torch.tensor(text_to_ids(utt.text), dtype=torch.long), mel))
    r = hp.n_frames_per_step
    batches = [collate(items[i : i + batch_size], r) for i in range(0, len(items), batch_size)]
    loss = Tacotron2Loss(hp)
    loss.decay_steps = int(payload["schedule"]["guided_attn_decay_steps"])
    device = torch.device("cpu")

    said: list[FreeRun] = []

    def both() -> dict[str, float]:
        torch.manual_seed(seed)
        metrics, _ = measure(model, loss, batches, hp, device)
        said.append(free_run(model, items, hp, mean, std, seed, batch_size=batch_size))
        metrics.update(said[-1].metrics)
        return metrics

    with torch.random.fork_rng():
        metrics = both()
        if payload.get("ema"):
            with swapped_weights(model, payload["ema"]):
                metrics.update({f"ema_{k}": v for k, v in both().items()})
    if samples_dir is not None:  # the weights candidates are compared on: the averaged ones when kept
        write_samples(said[-1], utterances, hp, samples_dir)
    return metrics


def measured_utterances(dataset: Path, held_out: tuple[int, int, int] | None = None) -> list[Utterance]:
    """What is measured: ``dataset``'s utterances, or with ``held_out`` the test slice held out of it."""
    utterances = load_dataset(dataset)
    if held_out is None:
        return utterances
    val_count, test_count, split_seed = held_out
    try:
        return held_out_slice(utterances, val_count, split_seed, test_count)
    except ValueError as exc:
        raise DatasetError(f"{dataset}: {exc}") from None


def write_samples(said: FreeRun, utterances: Sequence[Utterance], hp: HParams, folder: Path) -> list[Path]:
    """Each free-running sentence as a WAV in ``folder`` and ``samples.json`` describing them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    listing = []
    for utt, mel, stopped in zip(utterances, said.mels, said.stopped, strict=True):
        audio = vocode(mel, hp)
        path = folder / f"{utt.id}.wav"
        save_wav(path, audio, hp.sampling_rate)
        paths.append(path)
        seconds = round(audio.numel() / hp.sampling_rate, 3)
        listing.append({"wav": path.name, "text": utt.text, "stopped_by_gate": stopped, "seconds": seconds})
    (folder / "samples.json").write_text(json.dumps(listing, indent=1) + "\n", encoding="utf-8")
    return paths


def _held_out(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--held-out wants VAL,TEST,SEED (three non-negative integers), got {text!r}")
    val_count, test_count, seed = (int(p) for p in parts)
    if test_count < 1:
        raise ValueError(f"--held-out: TEST must be at least 1, got {test_count}")
    return val_count, test_count, seed


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m smart_tuner.trainer.heldout", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument(
        "dataset",
        help=f"an LJSpeech folder or an NVIDIA filelist the model did not train on; {DEMO_TEST!r}: the demo's",
    )
    p.add_argument("--samples", type=Path, default=None, help="write each sentence as said, as a WAV, here")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics (and n_sentences) to this file")
    p.add_argument("--cache-dir", type=Path, default=None, help="where the mels go (default: the user cache)")
    p.add_argument("--data-dir", type=Path, default=None, help="where the demo/tiny corpora are (as the trainer's)")
    p.add_argument("--sha256", default=None, help="the checkpoint's expected hash (default: its sidecar)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--held-out",
        metavar="VAL,TEST,SEED",
        default=None,
        help="DATASET is the training data: measure the TEST utterances the trainer held out of it "
        "(its val_count, test_count and split seed)",
    )
    args = p.parse_args(argv)
    try:
        held_out = _held_out(args.held_out)
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.dataset == DEMO_TEST:
            dataset = ensure_demo_test_set()
        elif args.dataset in ("demo", "tiny"):
            dataset = resolve_corpus(TrainerConfig(dataset=args.dataset, data_dir=args.data_dir))
        else:
            dataset = Path(args.dataset)
        metrics = evaluate_checkpoint(
            args.checkpoint,
            dataset,
            sha256=args.sha256,
            cache_dir=args.cache_dir or default_cache_dir(TrainerConfig(data_dir=args.data_dir), dataset),
            samples_dir=args.samples,
            held_out=held_out,
        )
        n_sentences = len(measured_utterances(dataset, held_out))
    except (ckpt.CheckpointError, DatasetError, HParamError, CorpusError, ValueError) as exc:
        print(f"heldout: error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps({**metrics, "n_sentences": n_sentences}, indent=1, sort_keys=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
