"""The stdout source on captured console output: NVIDIA's lines, generic key=value lines, partial lines."""

from __future__ import annotations

import math
import os
from pathlib import Path

from smart_tuner.actors.watcher.console_source import STDOUT_RULES, StdoutSource

NVIDIA = STDOUT_RULES["nvidia_tacotron2"]


def test_nvidia_lines_become_readings_and_a_nan_loss_stays_a_nan(tmp_path: Path) -> None:
    log = tmp_path / "train.out"
    log.write_text(
        "Epoch: 0\n"
        "Train loss 1 12.345678 Grad Norm 3.210000 0.52s/it\n"
        "Train loss 2 nan Grad Norm inf 0.50s/it\n"
        "Validation loss 2:  1.234000  \n"
        "Saving model and optimizer state at iteration 2 to out/checkpoint_2\n"
    )
    source = StdoutSource(log, NVIDIA, segment_of=lambda: "s1")
    readings = source.read()
    assert [r.step for r in readings] == [1, 2]
    assert readings[0].metrics == {"train_loss": 12.345678, "grad_norm": 3.21} and readings[0].segment_id == "s1"
    assert math.isnan(readings[1].metrics["train_loss"]) and readings[1].metrics["grad_norm"] == math.inf
    assert readings[1].metrics["val_loss"] == 1.234
    assert (source.lines, source.matched) == (5, 3)


def test_a_line_the_writer_has_not_ended_waits_for_its_end(tmp_path: Path) -> None:
    log = tmp_path / "train.out"
    source = StdoutSource(log, NVIDIA)
    assert source.read() == []  # no file yet
    with log.open("w") as f:
        f.write("Train loss 1 0.5 Grad Norm 1.0 0.1s/it\nTrain loss 2 0.4 Gr")
    assert [r.step for r in source.read()] == [1]
    with log.open("a") as f:
        f.write("ad Norm 1.0 0.1s/it\n")
    (r,) = source.read()
    assert (r.step, r.metrics["train_loss"]) == (2, 0.4)
    assert source.read() == []


def test_a_replaced_log_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "train.out"
    log.write_text("Train loss 1 0.5 Grad Norm 1.0 0.1s/it\nTrain loss 2 0.4 Grad Norm 1.0 0.1s/it\n")
    source = StdoutSource(log, NVIDIA)
    assert len(source.read()) == 2
    new = tmp_path / "new.out"
    new.write_text("Train loss 3 0.3 Grad Norm 1.0 0.1s/it\n")
    os.replace(new, log)  # the next segment's process writes a fresh file
    assert [r.step for r in source.read()] == [3]


def test_generic_key_value_lines(tmp_path: Path) -> None:
    log = tmp_path / "train.out"
    log.write_text(
        "step=10 loss=0.75 grad_norm=2.5 lr=0.001 speed=3.2it/s\n"
        "iteration: 11, loss: 0.70, learning_rate: 1e-3\n"
        "loss=0.1 without a step is not a reading\n"
        "step 12 nothing we know\n"
    )
    readings = StdoutSource(log).read()
    assert [(r.step, dict(r.metrics)) for r in readings] == [
        (10, {"train_loss": 0.75, "grad_norm": 2.5, "learning_rate": 0.001}),  # lr, an alias; speed, unknown
        (11, {"train_loss": 0.70, "learning_rate": 1e-3}),
    ]
