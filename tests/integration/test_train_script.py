"""The standalone, NVIDIA-compatible train.py: its options, stdout line, TensorBoard tags and checkpoints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

TRAIN_LINE = re.compile(r"^Train loss (\d+) (\d+\.\d{6}) Grad Norm (\d+\.\d{6}) (\d+\.\d{2})s/it$")


def train(data_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "smart_tuner.trainer.train",
        "-o",
        str(out),
        "-l",
        "logs",
        "--dataset",
        "tiny",
        "--preset",
        "tiny",
        "--data-dir",
        str(data_dir),
        "--threads",
        "1",
        "--val-count",
        "4",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def tags(logdir: Path) -> dict[str, list[int]]:
    """Every tag in every event file under ``logdir`` with the steps it was written at."""
    found: dict[str, list[int]] = {}
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(event.step)
    return found


def test_trains_logs_and_resumes_like_nvidia(tiny_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = train(tiny_data_dir, out, "--hparams", "iters_per_checkpoint=2,max_steps=4,learning_rate=3e-3")
    assert first.returncode == 0, first.stderr
    lines = [m.groups() for m in map(TRAIN_LINE.match, first.stdout.splitlines()) if m]
    assert [int(g[0]) for g in lines] == [0, 1, 2, 3]
    assert "Validation loss 2:" in first.stdout
    assert sorted(p.name for p in out.glob("checkpoint_*") if "." not in p.name) == ["checkpoint_0", "checkpoint_2"]
    payload = torch.load(out / "checkpoint_2", weights_only=True)
    assert {"iteration", "state_dict", "optimizer", "learning_rate"} <= payload.keys()
    assert payload["iteration"] == 2 and payload["learning_rate"] == 3e-3

    found = tags(out / "logs")
    for tag in ("training.loss", "grad.norm", "learning.rate", "duration"):
        assert found[tag] == [0, 1, 2, 3], tag
    for tag in ("validation.loss", "alignment", "mel_target", "mel_predicted", "gate"):
        assert found[tag] == [0, 2], tag
    assert any(t.startswith("decoder/") for t in found)  # parameter histograms, NVIDIA's tag layout

    resumed = train(
        tiny_data_dir,
        out,
        "-c",
        str(out / "checkpoint_2"),
        "--hparams",
        "iters_per_checkpoint=2,max_steps=5,learning_rate=5e-4,p_decoder_dropout=0.25",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert [int(m.group(1)) for m in map(TRAIN_LINE.match, resumed.stdout.splitlines()) if m] == [3, 4]
    # the command line's values win over the checkpoint's: how a restart hands the script new ones
    again = torch.load(out / "checkpoint_4", weights_only=False)
    assert again["learning_rate"] == 5e-4 and again["hparams"]["p_decoder_dropout"] == 0.25
    assert again["optimizer"]["param_groups"][0]["lr"] == 5e-4


def test_warm_start_takes_weights_only(tiny_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert train(tiny_data_dir, out, "--hparams", "iters_per_checkpoint=1,max_steps=2").returncode == 0
    warm = train(
        tiny_data_dir,
        tmp_path / "warm",
        "-c",
        str(out / "checkpoint_1"),
        "--warm_start",
        "--hparams",
        "iters_per_checkpoint=1,max_steps=1",
    )
    assert warm.returncode == 0, warm.stderr
    assert re.search(r"^Train loss 0 ", warm.stdout, re.M)  # a warm start begins at iteration 0
    a = torch.load(out / "checkpoint_1", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "warm" / "checkpoint_0", weights_only=True)["state_dict"]
    assert not torch.equal(a["embedding.weight"], b["embedding.weight"])  # ignored layer: re-initialised, trained


def test_bad_hparams_are_refused_with_a_clear_error(tiny_data_dir: Path, tmp_path: Path) -> None:
    for text, fragment in [
        ("batch_size=2.5", "batch_size expects an int"),
        ("bogus=1", "unknown hyperparameter"),
        ("n_gpus=2", "unknown hyperparameter 'n_gpus'"),
    ]:
        proc = train(tiny_data_dir, tmp_path / "bad", "--hparams", text)
        assert proc.returncode == 2 and fragment in proc.stderr, (text, proc.stderr)


def test_nvidia_filelists_for_training_and_validation(tiny_data_dir: Path, tmp_path: Path) -> None:
    corpus = tiny_data_dir / "tiny-corpus"
    rows = [line.split("|") for line in (corpus / "metadata.csv").read_text().splitlines() if line.strip()]
    lines = [f"{corpus / 'wavs' / (r[0] + '.wav')}|{r[1]}" for r in rows]
    (tmp_path / "train.txt").write_text("\n".join(lines[:8]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(lines[8:11]) + "\n")
    hparams = f"training_files={tmp_path / 'train.txt'},validation_files={tmp_path / 'val.txt'},max_steps=2"
    proc = train(tiny_data_dir, tmp_path / "out", "--hparams", hparams)
    assert proc.returncode == 0, proc.stderr
    assert "Validation loss 0:" in proc.stdout
    bad = train(tiny_data_dir, tmp_path / "out2", "--hparams", f"validation_files={tmp_path / 'missing.txt'}")
    assert bad.returncode == 2 and "missing.txt" in bad.stderr
