"""Tacotron2's training loss, its parts, and the unweighted objective candidates are compared on.

    total = mse(mel) + mse(mel_post) + gate_loss_weight * bce(gate) + w_ga * guided_attention
    objective = mse(mel_post) + bce(gate)                 (no tunable weight in it)

* The mel losses are mean squared errors over the real frames of each utterance
  (padding excluded), before and after the postnet.
* The gate (stop token) loss is NVIDIA's: binary cross-entropy over every frame of the
  padded batch, the target 1 from each utterance's last frame on, with an optional
  ``gate_pos_weight`` for the rare stop frames.
* Guided attention (Tachibana et al. 2018, DC-TTS): the penalty
  ``1 - exp(-(n/N - t/T)^2 / (2 g^2))`` weighs attention far from the diagonal. Here it
  is summed over the encoder axis and **averaged per decoder step**, so it lies in
  [0, 1]; ESPnet averages over every cell, which is about 1/N as large, so an ESPnet
  weight w corresponds to roughly w / N here. ``w_ga`` is ``guided_attn_weight``
  multiplied by ``guided_attn_decay`` once per training step (the counter lives in the
  checkpoint).

The tuned weights change the training loss, so comparing candidates on it would reward
turning them down; ``objective`` is computed the same way for every candidate.

Imports torch, ``trainer.hparams`` and ``trainer.model`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from .hparams import HParams
from .model import Outputs


@dataclass
class LossParts:
    total: Tensor
    mel_loss: Tensor
    mel_post_loss: Tensor
    gate_loss: Tensor
    guided_attn_loss: Tensor
    objective: Tensor

    def floats(self) -> dict[str, float]:
        """The parts as floats, named as in the metrics the worker reports."""
        return {
            "loss": float(self.total.detach()),
            "mel_loss": float(self.mel_loss.detach()),
            "mel_post_loss": float(self.mel_post_loss.detach()),
            "gate_loss": float(self.gate_loss.detach()),
            "guided_attn_loss": float(self.guided_attn_loss.detach()),
            "objective": float(self.objective),
        }


def frame_mask(mel_lengths: Tensor, t: int) -> Tensor:
    """(B, t) True on the real frames."""
    return torch.arange(t, device=mel_lengths.device).unsqueeze(0) < mel_lengths.unsqueeze(1)


def guided_attention(alignments: Tensor, text_lengths: Tensor, dec_lengths: Tensor, sigma: float) -> Tensor:
    """Mean over real decoder steps of the attention mass weighted by the off-diagonal penalty."""
    _, t_dec, n_enc = alignments.shape
    t = torch.arange(t_dec, device=alignments.device).float().unsqueeze(0) / dec_lengths.float().unsqueeze(1)
    n = torch.arange(n_enc, device=alignments.device).float().unsqueeze(0) / text_lengths.float().unsqueeze(1)
    penalty = 1.0 - torch.exp(-((n.unsqueeze(1) - t.unsqueeze(2)) ** 2) / (2.0 * sigma**2))  # (B, T_dec, N)
    valid = frame_mask(dec_lengths, t_dec).unsqueeze(2) & frame_mask(text_lengths, n_enc).unsqueeze(1)
    per_step = (alignments * penalty * valid).sum(dim=2)  # (B, T_dec)
    return per_step.sum() / dec_lengths.sum().clamp(min=1)


class Tacotron2Loss:
    """Called as ``loss(outputs, batch_mel, batch_gate, text_lengths, mel_lengths)``; weights set in place."""

    def __init__(self, hp: HParams) -> None:
        self.r = hp.n_frames_per_step
        self.apply(hp)
        self.decay_steps = 0  # schedule counter: steps the guided-attention decay has been applied

    def apply(self, hp: HParams) -> None:
        """Hot change of the loss weights (no rebuild)."""
        self.guided_attn_weight = hp.guided_attn_weight
        self.guided_attn_sigma = hp.guided_attn_sigma
        self.guided_attn_decay = hp.guided_attn_decay
        self.gate_loss_weight = hp.gate_loss_weight
        self.gate_pos_weight = hp.gate_pos_weight
        self.r = hp.n_frames_per_step

    @property
    def effective_guided_attn_weight(self) -> float:
        return float(self.guided_attn_weight * self.guided_attn_decay**self.decay_steps)

    def __call__(self, out: Outputs, mel: Tensor, gate: Tensor, text_lengths: Tensor, mel_lengths: Tensor) -> LossParts:
        mask = frame_mask(mel_lengths, mel.size(2)).unsqueeze(1)  # (B, 1, T)
        n_real = mask.sum() * mel.size(1)
        mel_loss = (((out.mel - mel) ** 2) * mask).sum() / n_real
        mel_post_loss = (((out.mel_post - mel) ** 2) * mask).sum() / n_real
        pos_weight = torch.tensor(self.gate_pos_weight, device=gate.device)
        gate_loss = F.binary_cross_entropy_with_logits(out.gate, gate, pos_weight=pos_weight)
        dec_lengths = torch.div(mel_lengths + self.r - 1, self.r, rounding_mode="floor")
        ga = guided_attention(out.alignments, text_lengths, dec_lengths, self.guided_attn_sigma)
        total = mel_loss + mel_post_loss + self.gate_loss_weight * gate_loss
        if self.guided_attn_weight > 0:
            total = total + self.effective_guided_attn_weight * ga
        # The objective's gate term is the plain BCE, whatever gate_pos_weight is.
        plain_gate = gate_loss if self.gate_pos_weight == 1.0 else F.binary_cross_entropy_with_logits(out.gate, gate)
        objective = mel_post_loss + plain_gate
        return LossParts(total, mel_loss, mel_post_loss, gate_loss, ga, objective.detach())
