"""The reference Tacotron2, top to bottom.

Shen et al., "Natural TTS Synthesis by Conditioning WaveNet on Mel Spectrogram
Predictions" (ICASSP 2018), as in NVIDIA's tacotron2, with three additions that a
tuner needs: a reduction factor r (frames per decoder step, Wang et al. 2017), a
teacher-forcing ratio (scheduled sampling, Bengio et al. 2015), and dropout
probabilities that can be changed on a live model.

    text ids -> Embedding -> Encoder (convs + BiLSTM) -> memory (B, N, E)
    memory + previous frame -> Decoder (prenet, attention RNN, location-sensitive
        attention, decoder RNN) -> r mel frames + r stop-token logits per step
    mel -> Postnet (5 convs) -> residual -> refined mel

``Tacotron2(hp)`` takes the hyperparameters (``trainer.hparams.HParams``);
``forward`` trains (teacher-forced), ``infer`` runs free until the stop token fires.

Imports torch and ``trainer.hparams`` only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .hparams import HParams


@dataclass
class Outputs:
    mel: Tensor  # (B, n_mels, T) before the postnet
    mel_post: Tensor  # (B, n_mels, T) after it
    gate: Tensor  # (B, T) stop-token logits, one per frame
    alignments: Tensor  # (B, T_dec, N) attention weights, T_dec = T / r


def _conv_bn(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=(kernel - 1) // 2), nn.BatchNorm1d(c_out))


# --- encoder ---------------------------------------------------------------------------


class Encoder(nn.Module):
    """Three 5-wide convolutions (character n-grams) then a BiLSTM over the text."""

    def __init__(self, hp: HParams) -> None:
        super().__init__()
        dims = [hp.symbols_embedding_dim] + [hp.encoder_embedding_dim] * hp.encoder_n_convolutions
        self.convs = nn.ModuleList(_conv_bn(a, b, hp.encoder_kernel_size) for a, b in itertools.pairwise(dims))
        self.lstm = nn.LSTM(
            hp.encoder_embedding_dim, hp.encoder_embedding_dim // 2, batch_first=True, bidirectional=True
        )
        self.dropout = hp.p_encoder_dropout

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:  # x: (B, C, N)
        for conv in self.convs:
            x = F.dropout(F.relu(conv(x)), self.dropout, self.training)
        packed = nn.utils.rnn.pack_padded_sequence(
            x.transpose(1, 2), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.size(2))
        return memory


# --- attention -------------------------------------------------------------------------


class LocationSensitiveAttention(nn.Module):
    """Chorowski et al. 2015: content (query vs memory) plus location (a conv over the
    previous and the cumulative attention), so the alignment moves forward smoothly."""

    def __init__(self, hp: HParams) -> None:
        super().__init__()
        self.query = nn.Linear(hp.attention_rnn_dim, hp.attention_dim, bias=False)
        self.memory = nn.Linear(hp.encoder_embedding_dim, hp.attention_dim, bias=False)
        k = hp.attention_location_kernel_size
        self.location_conv = nn.Conv1d(2, hp.attention_location_n_filters, k, padding=(k - 1) // 2, bias=False)
        self.location = nn.Linear(hp.attention_location_n_filters, hp.attention_dim, bias=False)
        self.v = nn.Linear(hp.attention_dim, 1, bias=False)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, prev: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, Q); keys = self.memory(memory) (B, N, A); prev (B, 2, N); mask (B, N) True on padding."""
        loc = self.location(self.location_conv(prev).transpose(1, 2))
        energies = self.v(torch.tanh(self.query(query).unsqueeze(1) + loc + keys)).squeeze(-1)
        weights = F.softmax(energies.masked_fill(mask, -math.inf), dim=1)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
        return context, weights


# --- decoder ---------------------------------------------------------------------------


class Prenet(nn.Module):
    """Two ReLU layers with dropout that stays on at inference (the paper's source of variety)."""

    def __init__(self, n_in: int, dim: int, p: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(n_in, dim, bias=False), nn.Linear(dim, dim, bias=False)])
        self.dropout = p

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = F.dropout(F.relu(layer(x)), self.dropout, training=True)
        return x


class Decoder(nn.Module):
    def __init__(self, hp: HParams) -> None:
        super().__init__()
        self.n_mels, self.r = hp.n_mel_channels, hp.n_frames_per_step
        e = hp.encoder_embedding_dim
        self.prenet = Prenet(hp.n_mel_channels, hp.prenet_dim, hp.p_prenet_dropout)
        self.attention_rnn = nn.LSTMCell(hp.prenet_dim + e, hp.attention_rnn_dim)
        self.attention = LocationSensitiveAttention(hp)
        self.decoder_rnn = nn.LSTMCell(hp.attention_rnn_dim + e, hp.decoder_rnn_dim)
        self.projection = nn.Linear(hp.decoder_rnn_dim + e, hp.n_mel_channels * self.r)
        self.gate = nn.Linear(hp.decoder_rnn_dim + e, self.r)
        self.p_attention_dropout = hp.p_attention_dropout
        self.p_decoder_dropout = hp.p_decoder_dropout

    def _init_state(self, memory: Tensor) -> list[Tensor]:
        b, n, e = memory.shape
        z = memory.new_zeros
        a, d = self.attention_rnn.hidden_size, self.decoder_rnn.hidden_size
        # attention h, c; decoder h, c; attention weights; their running sum; context
        return [z(b, a), z(b, a), z(b, d), z(b, d), z(b, n), z(b, n), z(b, e)]

    def _step(self, frame: Tensor, s: list[Tensor], keys: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        """One decoder step from the previous frame (B, n_mels); updates ``s``; returns the decoder output."""
        att_h, att_c, dec_h, dec_c, weights, cum, context = s
        x = torch.cat([self.prenet(frame), context], dim=-1)
        att_h, att_c = self.attention_rnn(x, (att_h, att_c))
        att_h = F.dropout(att_h, self.p_attention_dropout, self.training)
        prev = torch.stack([weights, cum], dim=1)
        context, weights = self.attention(att_h, keys, memory, prev, mask)
        dec_h, dec_c = self.decoder_rnn(torch.cat([att_h, context], dim=-1), (dec_h, dec_c))
        dec_h = F.dropout(dec_h, self.p_decoder_dropout, self.training)
        s[:] = [att_h, att_c, dec_h, dec_c, weights, cum + weights, context]
        return torch.cat([dec_h, context], dim=-1)

    def forward(self, memory: Tensor, text_lengths: Tensor, mel: Tensor, tf_ratio: float) -> tuple[Tensor, ...]:
        """Teacher-forced decoding of ``mel`` (B, n_mels, T), T a multiple of r.

        With ``tf_ratio < 1`` each step is fed, with probability 1 - tf_ratio, the
        model's own previous prediction instead of the true frame (scheduled sampling).
        """
        b, n_mels, t = mel.shape
        steps = t // self.r
        # The input to step k is the last true frame of group k-1 (a zero "go" frame first).
        groups = mel.transpose(1, 2).reshape(b, steps, self.r * n_mels)[:, :, -n_mels:]
        inputs = torch.cat([mel.new_zeros(b, 1, n_mels), groups[:, :-1]], dim=1)
        mask = _padding_mask(text_lengths, memory.size(1))
        keys = self.attention.memory(memory)
        s = self._init_state(memory)
        frames, gates, aligns = [], [], []
        own = None
        for k in range(steps):
            frame = inputs[:, k]
            if own is not None and tf_ratio < 1.0:
                use_own = torch.rand(b, 1, device=mel.device) >= tf_ratio
                frame = torch.where(use_own, own, frame)
            out = self._step(frame, s, keys, memory, mask)
            pred = self.projection(out)
            frames.append(pred)
            gates.append(self.gate(out))
            aligns.append(s[4])
            own = pred[:, -n_mels:].detach()
        mel_out = torch.stack(frames, dim=1).reshape(b, steps * self.r, n_mels).transpose(1, 2)
        return mel_out, torch.cat(gates, dim=1), torch.stack(aligns, dim=1)

    @torch.no_grad()
    def infer(self, memory: Tensor, text_lengths: Tensor, max_steps: int, gate_threshold: float) -> tuple[Tensor, ...]:
        """Free-running decoding until every utterance's stop token fires or ``max_steps``."""
        b = memory.size(0)
        mask = _padding_mask(text_lengths, memory.size(1))
        keys = self.attention.memory(memory)
        s = self._init_state(memory)
        frame = memory.new_zeros(b, self.n_mels)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        lengths = torch.full((b,), max_steps * self.r, dtype=torch.long, device=memory.device)
        frames, gates, aligns = [], [], []
        for k in range(max_steps):
            out = self._step(frame, s, keys, memory, mask)
            pred, gate = self.projection(out), self.gate(out)
            frames.append(pred)
            gates.append(gate)
            aligns.append(s[4])
            stop = (torch.sigmoid(gate) > gate_threshold).any(dim=1) & ~done
            lengths[stop] = (k + 1) * self.r
            done |= stop
            if bool(done.all()):
                break
            frame = pred[:, -self.n_mels :]
        mel_out = torch.stack(frames, dim=1).reshape(b, -1, self.n_mels).transpose(1, 2)
        return mel_out, torch.cat(gates, dim=1), torch.stack(aligns, dim=1), lengths


def _padding_mask(lengths: Tensor, n: int) -> Tensor:
    """(B, n) True where position >= length."""
    return torch.arange(n, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)


# --- postnet ---------------------------------------------------------------------------


class Postnet(nn.Module):
    """Five convolutions predicting a residual that sharpens the decoder's mel."""

    def __init__(self, hp: HParams) -> None:
        super().__init__()
        k, c = hp.postnet_kernel_size, hp.postnet_embedding_dim
        dims = [hp.n_mel_channels] + [c] * (hp.postnet_n_convolutions - 1) + [hp.n_mel_channels]
        self.convs = nn.ModuleList(_conv_bn(a, b, k) for a, b in itertools.pairwise(dims))
        self.dropout = hp.p_postnet_dropout

    def forward(self, x: Tensor) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = torch.tanh(x)
            x = F.dropout(x, self.dropout, self.training)
        return x


# --- the model -------------------------------------------------------------------------


class Tacotron2(nn.Module):
    def __init__(self, hp: HParams, n_symbols: int) -> None:
        super().__init__()
        self.n_symbols = n_symbols
        self.embedding = nn.Embedding(n_symbols, hp.symbols_embedding_dim)
        bound = math.sqrt(3.0) * math.sqrt(2.0 / (n_symbols + hp.symbols_embedding_dim))  # as NVIDIA's
        self.embedding.weight.data.uniform_(-bound, bound)
        self.encoder = Encoder(hp)
        self.decoder = Decoder(hp)
        self.postnet = Postnet(hp)
        self.r = hp.n_frames_per_step

    def forward(self, text: Tensor, text_lengths: Tensor, mel: Tensor, tf_ratio: float = 1.0) -> Outputs:
        memory = self.encoder(self.embedding(text).transpose(1, 2), text_lengths)
        mel_out, gate, align = self.decoder(memory, text_lengths, mel, tf_ratio)
        return Outputs(mel_out, mel_out + self.postnet(mel_out), gate, align)

    @torch.no_grad()
    def infer(self, text: Tensor, text_lengths: Tensor, max_steps: int, gate_threshold: float = 0.5) -> Outputs:
        """Free-running synthesis; ``Outputs.mel_post`` frames past each utterance's stop are padding."""
        memory = self.encoder(self.embedding(text).transpose(1, 2), text_lengths)
        mel_out, gate, align, _ = self.decoder.infer(memory, text_lengths, max_steps, gate_threshold)
        return Outputs(mel_out, mel_out + self.postnet(mel_out), gate, align)

    # --- changing a live model (hot hyperparameters) -----------------------------------

    def set_dropouts(self, hp: HParams) -> None:
        self.encoder.dropout = hp.p_encoder_dropout
        self.decoder.prenet.dropout = hp.p_prenet_dropout
        self.decoder.p_attention_dropout = hp.p_attention_dropout
        self.decoder.p_decoder_dropout = hp.p_decoder_dropout
        self.postnet.dropout = hp.p_postnet_dropout

    def dropouts(self) -> dict[str, float]:
        return {
            "p_encoder_dropout": self.encoder.dropout,
            "p_prenet_dropout": self.decoder.prenet.dropout,
            "p_attention_dropout": self.decoder.p_attention_dropout,
            "p_decoder_dropout": self.decoder.p_decoder_dropout,
            "p_postnet_dropout": self.postnet.dropout,
        }


def warm_start_reduction(old: Tacotron2, hp: HParams) -> Tacotron2:
    """A model with reduction factor ``hp.n_frames_per_step`` that keeps everything ``old`` learned.

    Every weight is copied; the output projection and the gate emit r frames per
    step, so their rows are rebuilt from the old ones: frame j of the new group
    takes the rows of old frame min(j, r_old - 1).
    """
    new = Tacotron2(hp, old.n_symbols).to(next(old.parameters()).device)
    state = old.state_dict()
    n_mels, r_old, r_new = hp.n_mel_channels, old.r, hp.n_frames_per_step
    pick = [min(j, r_old - 1) for j in range(r_new)]
    for name in ("decoder.projection.weight", "decoder.projection.bias"):
        rows = state[name].reshape(r_old, n_mels, *state[name].shape[1:])
        state[name] = rows[pick].reshape(r_new * n_mels, *state[name].shape[1:]).clone()
    for name in ("decoder.gate.weight", "decoder.gate.bias"):
        state[name] = state[name][pick].clone()
    new.load_state_dict(state)
    new.train(old.training)
    return new


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
