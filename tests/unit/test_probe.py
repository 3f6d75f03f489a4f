"""``probe`` on each preset's fixture: the preset it detects, the metrics it finds, what it cannot map."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from smart_tuner.actors.watcher.layouts import detect
from smart_tuner.actors.watcher.probe import ProbeError, probe_target, render

ROOT = Path(__file__).resolve().parents[2]

# preset -> {subdirectory: [tags]}: each trainer's layout (REFERENCE.md), plus a tag nobody maps
LAYOUTS: dict[str, dict[str, list[str]]] = {
    "nvidia_tacotron2": {"": ["training.loss", "validation.loss", "grad.norm", "learning.rate", "duration"]},
    "coqui": {
        "": [
            "TrainIterStats/loss",
            "TrainIterStats/grad_norm",
            "TrainIterStats/current_lr",
            "EvalStats/avg_loss",
            "EvalStats/avg_postnet_loss",
            "TrainIterStats/step_time",
        ]
    },
    "espnet2": {"train": ["loss", "grad_norm", "optim0_lr0", "l1_loss"], "valid": ["loss", "bce_loss"]},
    "vits": {"": ["loss/g/total", "loss/d/total", "grad_norm_g", "grad_norm_d", "learning_rate"]},
    "indextts": {"": ["text_loss", "mel_loss", "mel_top1", "lr"]},
    "generic": {"": ["train_loss", "val_loss", "throughput"]},
}
EXPECTED = {
    "nvidia_tacotron2": {"train_loss", "val_loss", "grad_norm", "learning_rate"},
    "coqui": {"train_loss", "val_loss", "grad_norm", "learning_rate", "val_mel_post_loss"},
    "espnet2": {"train_loss", "val_loss", "grad_norm", "learning_rate", "val_gate_loss"},
    "vits": {"train_loss", "grad_norm", "learning_rate"},
    "indextts": {"train_loss", "train_text_loss", "train_mel_top1", "learning_rate"},
    "generic": {"train_loss", "val_loss"},
}


def write_layout(logdir: Path, layout: dict[str, list[str]], steps: int = 4) -> None:
    for sub, tags in layout.items():
        w = SummaryWriter(str(logdir / sub) if sub else str(logdir))
        for i in range(steps):
            for j, tag in enumerate(tags):
                w.add_scalar(tag, 1.0 / (i + 1) + j, i)
        w.close()


@pytest.mark.parametrize("preset", sorted(LAYOUTS))
def test_each_presets_fixture_is_recognised_and_read(tmp_path: Path, preset: str) -> None:
    write_layout(tmp_path / "logs", LAYOUTS[preset])
    found = probe_target(str(tmp_path / "logs"))
    assert found.preset == preset and found.matches[0].preset.name == preset
    assert set(found.latest) == EXPECTED[preset]
    assert all(step == 3 for step, _, _ in found.latest.values())  # the latest of 4 steps
    text = render(found)
    assert f"preset      {preset}" in text and "train_loss" in text
    if preset == "espnet2":
        assert found.x_axis == "epoch" and found.latest["val_loss"][2] == "valid/loss"
        assert found.latest["train_loss"][1] == pytest.approx(1.0 / 4)  # train/loss, not valid/loss
    unknown = {
        "nvidia_tacotron2": "duration",
        "coqui": "TrainIterStats/step_time",
        "espnet2": "train/l1_loss",
        "vits": "loss/d/total",
        "generic": "throughput",
    }.get(preset)
    if unknown:
        assert unknown in found.unmapped and f"{unknown} (4 values)" in text


def test_detection_confidence_grows_with_the_signature_seen() -> None:
    few, many = detect({("", "training.loss")}), detect({("", t) for t in LAYOUTS["nvidia_tacotron2"][""]})
    assert few[0].preset.name == many[0].preset.name == "nvidia_tacotron2"
    assert few[0].confidence == 0.2 and many[0].confidence == 1.0
    assert detect({("", "something_else")}) == []
    generic_only = detect({("", "train_loss"), ("", "val_loss")})
    assert generic_only[0].preset.name == "generic" and generic_only[0].confidence < 0.5


def test_a_console_log_and_an_mlflow_run(tmp_path: Path) -> None:
    log = tmp_path / "train.out"
    log.write_text("Train loss 1 0.9 Grad Norm 2.0 0.5s/it\nTrain loss 2 0.8 Grad Norm 1.9 0.5s/it\nnoise\n")
    found = probe_target(str(log))
    assert found.kind == "stdout" and found.preset == "nvidia_tacotron2"
    assert found.latest["train_loss"][:2] == (2, 0.8) and "2 of 3 lines matched" in render(found)

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("tts"))
    for i in range(3):
        client.log_metric(run.info.run_id, "loss", 1.0 - i / 10, step=i)
        client.log_metric(run.info.run_id, "tokens_per_s", 100.0, step=i)
    found = probe_target(uri)  # the newest run
    assert found.kind == "mlflow" and found.latest["train_loss"][:2] == (2, pytest.approx(0.8))
    assert "tokens_per_s" in found.unmapped


def test_probe_on_the_command_line(tmp_path: Path) -> None:
    write_layout(tmp_path / "good", LAYOUTS["nvidia_tacotron2"])
    write_layout(tmp_path / "unknown", {"": ["foo", "bar"]})
    (tmp_path / "empty").mkdir()

    def probe(target: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "run_tuner.py"), "probe", str(target)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    good = probe(tmp_path / "good")
    assert good.returncode == 0 and "nvidia_tacotron2" in good.stdout and "validation.loss" in good.stdout
    unknown = probe(tmp_path / "unknown")
    assert (
        unknown.returncode == 1 and "none Smart Tuner can use" in unknown.stdout and "foo (4 values)" in unknown.stdout
    )
    empty = probe(tmp_path / "empty")
    assert empty.returncode == 2 and "no TensorBoard event files" in empty.stderr
    with pytest.raises(ProbeError, match="no such directory"):
        probe_target(str(tmp_path / "nope"))
