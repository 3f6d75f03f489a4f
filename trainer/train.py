"""Standalone training, NVIDIA tacotron2-compatible: our model without the tuner.

    python -m smart_tuner.trainer.train -o out -l logs [-c out/checkpoint_1000 [--warm_start]] \\
        [--hparams "learning_rate=3e-3,batch_size=16,iters_per_checkpoint=200"] [--dataset demo] [--preset demo]

Same options as NVIDIA's ``train.py`` (``-o/--output_directory``, ``-l/--log_directory``
joined under the output directory, ``-c/--checkpoint_path``, ``--warm_start``,
``--n_gpus``, ``--rank``, ``--group_name``, ``--hparams``) and the same outputs:

* stdout, every iteration: ``Train loss <i> <loss> Grad Norm <g> <dt>s/it``, and
  ``Validation loss <i>: <loss>`` at each checkpoint;
* TensorBoard, every iteration: ``training.loss``, ``grad.norm``, ``learning.rate``,
  ``duration``; every ``iters_per_checkpoint``: ``validation.loss``, parameter
  histograms, images ``alignment``, ``mel_target``, ``mel_predicted``, ``gate`` (plus our
  ``validation.objective`` and ``validation.diagonality``);
* ``checkpoint_<iteration>`` files with NVIDIA's keys (``iteration``, ``state_dict``,
  ``optimizer``, ``learning_rate``) beside ours (RNG, data position, hyperparameters…),
  so a resume is exact.

This is also the "user's own train.py" that the external mode tunes by restarts.
Never imports the tuner's client or zmq.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import TrainerConfig
from .harness import SegmentError, Trainer
from .hparams import HParamError, parse_hparams_with_extras, preset
from .metrics import alignment_image, decoder_steps, to_rgb

# NVIDIA's loop settings, accepted in --hparams beside the model's (typed by these defaults).
LOOP_DEFAULTS: dict[str, Any] = {
    "epochs": 500,
    "iters_per_checkpoint": 1000,
    "max_steps": 0,  # ours: stop after this many iterations in total (0: only epochs count)
    "ignore_layers": ["embedding.weight"],
    "training_files": "",
    "validation_files": "",
    "distributed_run": False,
    "cudnn_enabled": True,
    "cudnn_benchmark": False,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m smart_tuner.trainer.train", description=__doc__.split("\n")[0])
    p.add_argument("-o", "--output_directory", type=Path, required=True, help="directory to save checkpoints")
    p.add_argument("-l", "--log_directory", type=str, required=True, help="directory to save tensorboard logs")
    p.add_argument("-c", "--checkpoint_path", type=Path, default=None, help="checkpoint path")
    p.add_argument("--warm_start", "--warm-start", action="store_true", help="load model weights only")
    p.add_argument("--n_gpus", "--n-gpus", type=int, default=1, help="number of gpus")
    p.add_argument("--rank", type=int, default=0, help="rank of current gpu")
    p.add_argument("--group_name", "--group-name", type=str, default="group_name", help="distributed group name")
    p.add_argument("--hparams", type=str, default="", help="comma separated name=value pairs")
    p.add_argument("--dataset", default="demo", help="demo, tiny, an LJSpeech folder or an NVIDIA filelist")
    p.add_argument("--preset", default="demo", help="starting hyperparameters: nvidia, demo or tiny")
    p.add_argument("--data-dir", type=Path, help="where the demo/tiny corpora are made")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--val-count", type=int, default=16, help="utterances held out for validation")
    return p


class NvidiaLogger:
    """NVIDIA's Tacotron2Logger: the same tags, written with torch's SummaryWriter."""

    def __init__(self, logdir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(logdir))

    def log_training(self, loss: float, grad_norm: float, lr: float, duration: float, iteration: int) -> None:
        self.writer.add_scalar("training.loss", loss, iteration)
        self.writer.add_scalar("grad.norm", grad_norm, iteration)
        self.writer.add_scalar("learning.rate", lr, iteration)
        self.writer.add_scalar("duration", duration, iteration)

    def log_validation(self, metrics: dict[str, float], trainer: Trainer, iteration: int) -> None:
        self.writer.add_scalar("validation.loss", metrics["val_loss"], iteration)
        self.writer.add_scalar("validation.objective", metrics["val_objective"], iteration)
        self.writer.add_scalar("validation.diagonality", metrics["diagonality"], iteration)
        for tag, value in trainer.model.named_parameters():
            self.writer.add_histogram(tag.replace(".", "/"), value.detach().cpu().numpy(), iteration)
        for tag, image in validation_images(trainer).items():
            self.writer.add_image(tag, image, iteration, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _heat(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    gray = ((values - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
    return to_rgb(np.ascontiguousarray(gray[::-1]))  # low bins at the bottom


@torch.no_grad()
def validation_images(trainer: Trainer) -> dict[str, np.ndarray]:
    """The first validation utterance: alignment, target and predicted mel, gate (target over predicted)."""
    batch = trainer.data.val_batches(trainer.hp.n_frames_per_step)[0].to(trainer.device)
    was = trainer.model.training
    trainer.model.eval()
    out = trainer.model(batch.text, batch.text_lengths, batch.mel, 1.0)
    trainer.model.train(was)
    frames = int(batch.mel_lengths[0])
    steps = int(decoder_steps(batch.mel_lengths, trainer.hp.n_frames_per_step)[0])
    gate = np.stack([batch.gate[0, :frames].cpu().numpy(), torch.sigmoid(out.gate[0, :frames]).cpu().numpy()])
    return {
        "alignment": to_rgb(alignment_image(out.alignments[0], int(batch.text_lengths[0]), steps)),
        "mel_target": _heat(batch.mel[0, :, :frames].cpu().numpy()),
        "mel_predicted": _heat(out.mel_post[0, :, :frames].cpu().numpy()),
        "gate": _heat(np.repeat(gate, 8, axis=0)[::-1]),
    }


def save_nvidia_checkpoint(trainer: Trainer, path: Path, iteration: int) -> str:
    """NVIDIA's keys (``iteration`` is the last finished one) beside the rest of our state."""
    payload = trainer.payload()
    payload["state_dict"] = payload.pop("model")
    payload.update({"iteration": iteration, "learning_rate": trainer.hp.learning_rate})
    return ckpt.save(path, payload)


def load_for_training(trainer: Trainer, path: Path, warm_start: bool, ignore_layers: list[str]) -> int:
    """Resume (everything) or warm-start (weights only, ``ignore_layers`` dropped); returns the next iteration."""
    payload = ckpt.load(path, map_location=str(trainer.device))
    state: dict[str, torch.Tensor] = payload.get("state_dict") or payload["model"]
    if warm_start:
        own = trainer.model.state_dict()
        kept = {k: v for k, v in state.items() if k not in ignore_layers and k in own and own[k].shape == v.shape}
        trainer.model.load_state_dict({**own, **kept})
        return 0
    payload = {**payload, "model": state}
    given = trainer.hp
    trainer.restore(payload, path)
    # The command line's --hparams win over the ones the checkpoint was trained with (as in NVIDIA's
    # train.py, where they come from the command line alone): this is how a restart changes them.
    theirs = trainer.hp.to_dict()
    changes = {k: v for k, v in given.to_dict().items() if theirs.get(k) != v}
    if changes:
        trainer.apply(changes)
    return int(payload["iteration"]) + 1


def train(args: argparse.Namespace) -> int:
    hp, loop = parse_hparams_with_extras(args.hparams, preset(args.preset), LOOP_DEFAULTS)
    if args.n_gpus > 1 or loop["distributed_run"]:
        raise HParamError("distributed training (--n_gpus > 1) is not supported by this build of train.py yet")
    dataset = loop["training_files"] or args.dataset
    out_dir: Path = args.output_directory
    out_dir.mkdir(parents=True, exist_ok=True)
    config = TrainerConfig(
        dataset=dataset,
        output_dir=out_dir,
        data_dir=args.data_dir,
        device=args.device,
        threads=args.threads,
        val_count=args.val_count,
        val_batch_size=max(1, min(16, args.val_count)),
        val_dataset=Path(loop["validation_files"]) if loop["validation_files"] else None,
    )
    trainer = Trainer(config, hp)
    iteration = 0
    if args.checkpoint_path is not None:
        iteration = load_for_training(trainer, args.checkpoint_path, args.warm_start, loop["ignore_layers"])
        print(f"Loaded checkpoint '{args.checkpoint_path}' from iteration {iteration}", flush=True)
    logger = NvidiaLogger(out_dir / args.log_directory) if args.rank == 0 else None
    every, max_steps = int(loop["iters_per_checkpoint"]), int(loop["max_steps"])
    try:
        while trainer.stream.epoch < loop["epochs"] and (max_steps <= 0 or iteration < max_steps):
            t0 = time.perf_counter()
            try:
                values = trainer.train_step()
            except SegmentError as exc:
                if exc.reason == "nan":  # NVIDIA's loop would print the non-finite values and go on; ours stops
                    print(f"Train loss {iteration} nan Grad Norm nan {time.perf_counter() - t0:.2f}s/it", flush=True)
                raise
            duration = time.perf_counter() - t0
            print(
                f"Train loss {iteration} {values['train_loss']:.6f} Grad Norm {values['grad_norm']:.6f} "
                f"{duration:.2f}s/it",
                flush=True,
            )
            if logger is not None:
                logger.log_training(values["train_loss"], values["grad_norm"], hp.learning_rate, duration, iteration)
            if iteration % every == 0:
                metrics, _ = trainer.validate()
                print(f"Validation loss {iteration}: {metrics['val_loss']:9f}  ", flush=True)
                if logger is not None:
                    logger.log_validation(metrics, trainer, iteration)
                    path = out_dir / f"checkpoint_{iteration}"
                    save_nvidia_checkpoint(trainer, path, iteration)
                    print(f"Saving model and optimizer state at iteration {iteration} to {path}", flush=True)
            iteration += 1
    finally:
        if logger is not None:
            logger.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return train(args)
    except (HParamError, ckpt.CheckpointError, ValueError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    except SegmentError as exc:
        print(f"train.py: training stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
