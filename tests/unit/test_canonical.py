"""The watcher's canonical names, matched on (source, directory, tag)."""

from __future__ import annotations

from smart_tuner.actors.watcher.source import canonical


def test_canonical_names_match_on_directory_and_tag() -> None:
    assert canonical("tensorboard", "training.loss") == "train_loss"  # NVIDIA
    assert canonical("tensorboard", "EvalStats/avg_loss") == "val_loss"  # Coqui
    assert canonical("tensorboard", "loss", "exp/tensorboard/train") == "train_loss"  # ESPnet2
    assert canonical("tensorboard", "loss", "exp/tensorboard/valid/") == "val_loss"
    assert canonical("tensorboard", "loss") is None  # ambiguous without its directory
    assert canonical("mlflow", "training.loss") == "train_loss"  # an MLflow key as NVIDIA names it
    assert canonical("stdout", "training.loss") is None  # each source has its own names
