"""TensorBoard files written by PyTorch Lightning's own logger, read as the watcher and ``probe`` read them.

Lightning's ``self.log("train_loss", on_step=True, on_epoch=True)`` writes ``train_loss_step`` and
``train_loss_epoch``; the first is the series a preset's ``train_loss`` means, the second an epoch
average that stays unmapped (and is shown as logged)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smart_tuner.actors.watcher.probe import probe_target

lightning = pytest.importorskip("lightning")  # a dev dependency: skipped only outside `pip install -e '.[dev]'`


class Tiny(lightning.LightningModule):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("lr", 0.05, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_lightnings_step_and_epoch_suffixes_are_read_as_the_series_they_are(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    logger = lightning.pytorch.loggers.TensorBoardLogger(save_dir=str(tmp_path), name="tiny")
    trainer = lightning.Trainer(
        max_epochs=2,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(Tiny(), loader, loader)
    assert trainer.global_step == 16

    found = probe_target(str(tmp_path / "tiny"))
    assert found.preset == "generic"
    step, value, logged_as = found.latest["train_loss"]
    run = "version_0/"  # the logger's folder for this run, as probe names where a tag was found
    assert logged_as == run + "train_loss_step" and step == 15 and value > 0  # the last step's, not the epoch mean
    assert (
        found.latest["val_loss"][2] == run + "val_loss" and found.latest["learning_rate"][2] == run + "lr"
    )  # on_step alone: no suffix
    assert found.unmapped[run + "train_loss_epoch"] == 2  # one per epoch, shown as logged
    assert not [key for key in found.unmapped if key.endswith("train_loss_step")]
