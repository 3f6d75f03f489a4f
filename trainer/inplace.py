"""Applying new hyperparameters to a live trainer: hot in place, warm rebuilt, cold refused.

    applied = apply_hparams(trainer, trainer.hp.replace(learning_rate=3e-3))

* hot: optimizer param groups (lr, betas, eps, weight decay), module dropout
  probabilities, loss weights, the clip threshold and teacher forcing (read from
  ``trainer.hp`` at every step);
* warm: ``batch_size`` rebuilds the batch stream at the same epoch and position (and
  scales lr by sqrt(new/old) when ``scale_lr_with_batch`` is set and lr itself did not
  change); ``n_frames_per_step`` rebuilds the model in-process with a warm start and
  moves the optimizer state of every parameter whose shape did not change;
* cold: refused with ``ColdChangeError`` naming each parameter and both values.

Imports torch and ``trainer`` only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .hparams import SPECS, HClass, HParamError, HParams
from .model import Tacotron2, warm_start_reduction

if TYPE_CHECKING:
    from .harness import Trainer


class ColdChangeError(HParamError):
    """A change to a parameter that is fixed for the life of a run."""


@dataclass
class Applied:
    """What one application changed: ``{name: (old, new)}``, the class of each, and how long it took."""

    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    classes: dict[str, HClass] = field(default_factory=dict)
    apply_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def effective(self) -> dict[str, Any]:
        return {name: new for name, (_, new) in self.changes.items()}


def new_optimizer(model: torch.nn.Module, hp: HParams) -> torch.optim.Adam:
    return torch.optim.Adam(
        model.parameters(),
        lr=hp.learning_rate,
        betas=(hp.adam_beta1, hp.adam_beta2),
        eps=hp.adam_eps,
        weight_decay=hp.weight_decay,
    )


def set_optimizer_hparams(optimizer: torch.optim.Optimizer, hp: HParams) -> None:
    for group in optimizer.param_groups:
        group["lr"] = hp.learning_rate
        group["weight_decay"] = hp.weight_decay
        group["betas"] = (hp.adam_beta1, hp.adam_beta2)
        group["eps"] = hp.adam_eps


def apply_hparams(trainer: Trainer, new: HParams) -> Applied:
    t0 = time.perf_counter()
    old = trainer.hp
    changes = old.diff(new)
    cold = {n: v for n, v in changes.items() if SPECS[n].hclass == "cold"}
    if cold:
        listed = ", ".join(f"{n} {a!r} -> {b!r}" for n, (a, b) in cold.items())
        raise ColdChangeError(f"cannot change cold hyperparameters mid-run (start a new run instead): {listed}")
    applied = Applied(changes=dict(changes), classes={n: SPECS[n].hclass for n in changes})
    if "batch_size" in changes:
        new = _change_batch_size(trainer, old, new, applied)
    if "n_frames_per_step" in changes:
        _change_reduction(trainer, new)
        applied.notes.append(f"model rebuilt for r={new.n_frames_per_step} with a warm start")
    trainer.hp = new
    set_optimizer_hparams(trainer.optimizer, new)
    trainer.model.set_dropouts(new)
    trainer.loss.apply(new)
    applied.apply_s = time.perf_counter() - t0
    return applied


def _change_batch_size(trainer: Trainer, old: HParams, new: HParams, applied: Applied) -> HParams:
    trainer.stream.set_batch_size(new.batch_size)
    if new.scale_lr_with_batch and "learning_rate" not in applied.changes:
        lr = old.learning_rate * math.sqrt(new.batch_size / old.batch_size)
        new = new.replace(learning_rate=lr)
        applied.changes["learning_rate"] = (old.learning_rate, lr)
        applied.classes["learning_rate"] = "hot"
        applied.notes.append(f"learning_rate scaled by sqrt({new.batch_size}/{old.batch_size})")
    return new


def _change_reduction(trainer: Trainer, new: HParams) -> None:
    """Rebuild the model for a new r and carry the optimizer state of every unchanged parameter over."""
    old_model: Tacotron2 = trainer.model
    old_params = dict(old_model.named_parameters())
    model = warm_start_reduction(old_model, new)
    optimizer = new_optimizer(model, new)
    for name, param in model.named_parameters():  # same module tree: the names match one to one
        state = trainer.optimizer.state.get(old_params[name])
        if state and old_params[name].shape == param.shape:
            optimizer.state[param] = {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
    trainer.model, trainer.optimizer = model, optimizer
    trainer.ema = None  # an average over another shape of model means nothing
