"""The TensorBoard event-file source on real files: torch's SummaryWriter and tensorboardX, each preset's tags."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from smart_tuner.actors.watcher.tensorboard_source import (
    PATTERN,
    EventFileTail,
    TensorBoardSource,
    masked_crc32c,
)


def nvidia_like(logdir: Path, steps: range, writer: str = "torch") -> None:
    """NVIDIA tacotron2's tags (training.loss, grad.norm, learning.rate every step; validation.loss)."""
    new_style = writer == "torch-new-style"  # a float tensor instead of simple_value
    if writer.startswith("torch"):
        w = SummaryWriter(str(logdir))
    else:
        import tensorboardX

        w = tensorboardX.SummaryWriter(str(logdir))
    for i in steps:
        w.add_scalar("training.loss", 1.0 / (i + 1), i, **({"new_style": True} if new_style else {}))
        w.add_scalar("grad.norm", 0.5, i)
        w.add_scalar("learning.rate", 1e-3, i)
        w.add_scalar("duration", 0.1, i)  # NVIDIA logs it; not a metric the tuner uses
        if i % 5 == 4:
            w.add_scalar("validation.loss", 2.0 / (i + 1), i)
    w.close()


@pytest.mark.parametrize("writer", ["torch", "torch-new-style", "tensorboardX"])
def test_nvidia_tags_become_canonical_readings_one_per_step(tmp_path: Path, writer: str) -> None:
    nvidia_like(tmp_path / "logs", range(10), writer)
    source = TensorBoardSource(tmp_path / "logs", segment_of=lambda: "seg-1")
    readings = asyncio.run(source.poll())
    assert [r.step for r in readings] == list(range(10))
    assert readings[3].metrics == {
        "train_loss": pytest.approx(0.25),
        "grad_norm": 0.5,
        "learning_rate": pytest.approx(1e-3),
    }
    assert readings[4].metrics["val_loss"] == pytest.approx(0.4) and readings[4].segment_id == "seg-1"
    assert source.unmapped[("", "duration")] == 10  # what the probe shows as not understood
    assert asyncio.run(source.poll()) == []  # nothing new: nothing read twice


def test_espnet_train_and_valid_directories_tell_the_same_tag_apart(tmp_path: Path) -> None:
    for sub, value in (("train", 1.5), ("valid", 2.5)):
        w = SummaryWriter(str(tmp_path / "tensorboard" / sub))
        for epoch in (1, 2):
            w.add_scalar("loss", value / epoch, epoch)
        w.close()
    readings = TensorBoardSource(tmp_path / "tensorboard").read()
    assert [(r.step, dict(r.metrics)) for r in readings] == [
        (1, {"train_loss": 1.5, "val_loss": 2.5}),
        (2, {"train_loss": 0.75, "val_loss": 1.25}),
    ]


def test_new_files_and_new_run_directories_are_picked_up_on_the_next_poll(tmp_path: Path) -> None:
    source = TensorBoardSource(tmp_path / "logs")
    assert source.read() == []  # the directory does not exist yet
    nvidia_like(tmp_path / "logs", range(3))
    assert [r.step for r in source.read()] == [0, 1, 2]
    nvidia_like(tmp_path / "logs" / "resumed", range(3, 6))  # a restart writes a new file elsewhere
    assert [r.step for r in source.read()] == [3, 4, 5]


def test_a_record_split_across_reads_arrives_once_complete(tmp_path: Path) -> None:
    nvidia_like(tmp_path / "src", range(6))
    (original,) = (tmp_path / "src").glob(PATTERN)
    data = original.read_bytes()
    live = tmp_path / "live" / original.name
    live.parent.mkdir()
    source = TensorBoardSource(tmp_path / "live")
    cut = len(data) // 2 + 3  # somewhere inside a record
    live.write_bytes(data[:cut])
    first = source.read()
    with live.open("ab") as f:
        f.write(data[cut:])
    second = source.read()
    got = [(r.step, sorted(r.metrics.items())) for r in first + second]
    whole = [(r.step, sorted(r.metrics.items())) for r in TensorBoardSource(tmp_path / "src").read()]
    # every scalar exactly once (a step may come in two pieces, split where the record was cut)
    merged: dict[int, dict[str, float]] = {}
    for step, items in got:
        for k, v in items:
            assert k not in merged.setdefault(step, {})
            merged[step][k] = v
    assert sorted((s, sorted(m.items())) for s, m in merged.items()) == whole
    assert first and second


def test_a_replaced_file_is_read_again_from_its_start(tmp_path: Path) -> None:
    nvidia_like(tmp_path / "a", range(4))
    nvidia_like(tmp_path / "b", range(100, 102))
    (a,) = (tmp_path / "a").glob(PATTERN)
    (b,) = (tmp_path / "b").glob(PATTERN)
    live = tmp_path / "live" / "events.out.tfevents.1.host"
    live.parent.mkdir()
    shutil.copy(a, live)
    source = TensorBoardSource(tmp_path / "live")
    assert [r.step for r in source.read()] == [0, 1, 2, 3]
    tmp = live.with_suffix(".tmp")
    shutil.copy(b, tmp)
    os.replace(tmp, live)  # rotated: same name, another file
    assert [r.step for r in source.read()] == [100, 101]


def test_a_corrupt_record_stops_that_file_only(tmp_path: Path) -> None:
    nvidia_like(tmp_path / "good", range(3))
    nvidia_like(tmp_path / "bad", range(3))
    (bad,) = (tmp_path / "bad").glob(PATTERN)
    data = bytearray(bad.read_bytes())
    data[-10] ^= 0xFF  # inside the last record's payload
    bad.write_bytes(bytes(data))
    source = TensorBoardSource(tmp_path)
    readings = source.read()
    tail = source.tails[bad]
    assert tail.broken is not None and "CRC" in tail.broken
    assert {r.step for r in readings} == {0, 1, 2}  # the good file whole, the bad one up to the damage
    assert source.read() == []
    # the writer starts the file over (another file under the name): it is read again, whole
    nvidia_like(tmp_path / "fresh", range(200, 202))
    (fresh,) = (tmp_path / "fresh").glob(PATTERN)
    shutil.copy(fresh, bad.with_suffix(".tmp"))
    os.replace(bad.with_suffix(".tmp"), bad)
    shutil.rmtree(tmp_path / "fresh")  # only the replaced file can give these steps
    assert [r.step for r in source.read()] == [200, 201] and tail.broken is None


def test_the_crc_is_the_masked_crc32c_tensorboard_writes() -> None:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
        assert masked_crc32c(data) == reference(data)


def test_a_tail_of_a_missing_file_reads_nothing(tmp_path: Path) -> None:
    assert EventFileTail(tmp_path / "nope").read() == []


def test_large_records_are_passed_over_and_the_scalars_around_them_read(tmp_path: Path) -> None:
    import numpy as np

    w = SummaryWriter(str(tmp_path / "logs"))
    w.add_scalar("training.loss", 0.5, 1)
    noise = np.random.default_rng(0).integers(0, 255, (3, 256, 256), dtype=np.uint8)  # ~200 KB as PNG
    w.add_image("alignment", noise, 1)
    w.add_scalar("training.loss", 0.4, 2)
    w.close()
    source = TensorBoardSource(tmp_path / "logs")
    readings = source.read()
    assert [(r.step, r.metrics["train_loss"]) for r in readings] == [(1, 0.5), (2, pytest.approx(0.4))]
    (tail,) = source.tails.values()
    assert tail.skipped == 1 and tail.broken is None
