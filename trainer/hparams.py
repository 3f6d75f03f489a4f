"""Every hyperparameter of the reference Tacotron2 and its trainer, declared once.

Names follow NVIDIA's tacotron2 (``learning_rate``, ``p_attention_dropout``, …) plus
our additions (``guided_attn_weight``, ``teacher_forcing_ratio``, …). Each one has a
type, a default, a range and a class that says how a change is applied between
segments without restarting the process:

* ``hot``  - set in place on the optimizer, the modules or the loss;
* ``warm`` - rebuild the batch stream (``batch_size``) or rebuild the model in-process
  with a warm start (``n_frames_per_step``);
* ``cold`` - fixed for the life of a run (audio, symbols, model dimensions); a change
  mid-run is refused with an error naming the parameter.

``HParams`` is a frozen dataclass; ``HParams().replace(**changes)`` validates every
change; ``parse_hparams_string`` reads NVIDIA's ``--hparams "name=value,…"``.

Imports the standard library only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

HClass = Literal["hot", "warm", "cold"]


class HParamError(ValueError):
    """A hyperparameter name, value or change that cannot be accepted."""


def _h(default: Any, cls: HClass, doc: str, low: float | None = None, high: float | None = None) -> Any:
    return field(default=default, metadata={"class": cls, "doc": doc, "low": low, "high": high})


@dataclass(frozen=True, slots=True)
class HParams:
    # --- optimisation (hot: optimizer param groups, clip threshold) -------------
    learning_rate: float = _h(1e-3, "hot", "Adam learning rate", 1e-6, 1.0)
    weight_decay: float = _h(1e-6, "hot", "Adam (L2) weight decay", 0.0, 1.0)
    adam_beta1: float = _h(0.9, "hot", "Adam beta1", 0.0, 0.999999)
    adam_beta2: float = _h(0.999, "hot", "Adam beta2", 0.0, 0.999999)
    adam_eps: float = _h(1e-6, "hot", "Adam epsilon", 1e-12, 1e-2)
    grad_clip_thresh: float = _h(1.0, "hot", "gradient norm clipping threshold", 1e-4, 1e6)
    ema_decay: float = _h(0.0, "hot", "decay of an exponential moving average of the weights (0: off)", 0.0, 0.99999)
    # --- regularisation (hot: module dropout probabilities) ---------------------
    p_attention_dropout: float = _h(0.1, "hot", "dropout on the attention RNN state", 0.0, 0.9)
    p_decoder_dropout: float = _h(0.1, "hot", "dropout on the decoder RNN state", 0.0, 0.9)
    p_prenet_dropout: float = _h(0.5, "hot", "prenet dropout (on at inference too, as in the paper)", 0.0, 0.9)
    p_encoder_dropout: float = _h(0.5, "hot", "dropout after each encoder convolution", 0.0, 0.9)
    p_postnet_dropout: float = _h(0.5, "hot", "dropout after each postnet convolution", 0.0, 0.9)
    # --- loss (hot: the loss module) ---------------------------------------------
    guided_attn_weight: float = _h(1.0, "hot", "weight of the guided-attention loss (per decoder step)", 0.0, 1e3)
    guided_attn_sigma: float = _h(0.4, "hot", "width g of the guided-attention penalty", 0.01, 2.0)
    guided_attn_decay: float = _h(1.0, "hot", "guided-attention weight multiplied by this every step", 0.9, 1.0)
    gate_loss_weight: float = _h(1.0, "hot", "weight of the stop-token (gate) BCE loss", 0.0, 1e3)
    gate_pos_weight: float = _h(1.0, "hot", "BCE weight of the rare positive (stop) frames", 0.1, 1e3)
    teacher_forcing_ratio: float = _h(1.0, "hot", "share of decoder steps fed the true previous frame", 0.0, 1.0)
    gate_threshold: float = _h(0.5, "hot", "stop probability at which inference stops", 0.01, 0.99)
    # --- data (warm: the batch stream is rebuilt at the same position) ----------
    batch_size: int = _h(64, "warm", "utterances per step", 1, 4096)
    scale_lr_with_batch: bool = _h(False, "hot", "on a batch-size change, scale lr by sqrt(new/old)")
    # --- model shape that can change in-process (warm: rebuild with a warm start)
    n_frames_per_step: int = _h(1, "warm", "reduction factor r: mel frames per decoder step", 1, 8)
    # --- model dimensions (cold) -------------------------------------------------
    symbols_embedding_dim: int = _h(512, "cold", "character embedding size", 4, 4096)
    encoder_embedding_dim: int = _h(512, "cold", "encoder output size (BiLSTM, both directions)", 4, 4096)
    encoder_n_convolutions: int = _h(3, "cold", "encoder convolutions", 1, 10)
    encoder_kernel_size: int = _h(5, "cold", "encoder convolution kernel (odd)", 1, 31)
    attention_rnn_dim: int = _h(1024, "cold", "attention RNN (LSTM) size", 4, 8192)
    attention_dim: int = _h(128, "cold", "attention projection size", 4, 4096)
    attention_location_n_filters: int = _h(32, "cold", "location-sensitive attention filters", 1, 512)
    attention_location_kernel_size: int = _h(31, "cold", "location-sensitive attention kernel (odd)", 1, 127)
    decoder_rnn_dim: int = _h(1024, "cold", "decoder RNN (LSTM) size", 4, 8192)
    prenet_dim: int = _h(256, "cold", "prenet layer size", 4, 4096)
    postnet_embedding_dim: int = _h(512, "cold", "postnet channels", 4, 4096)
    postnet_kernel_size: int = _h(5, "cold", "postnet convolution kernel (odd)", 1, 31)
    postnet_n_convolutions: int = _h(5, "cold", "postnet convolutions", 2, 10)
    max_decoder_steps: int = _h(1000, "hot", "decoder steps after which free-running inference gives up", 1, 100_000)
    # --- audio (cold) ---------------------------------------------------------------
    sampling_rate: int = _h(22050, "cold", "audio sample rate (Hz)", 4000, 96000)
    filter_length: int = _h(1024, "cold", "STFT size", 64, 8192)
    hop_length: int = _h(256, "cold", "STFT hop", 16, 4096)
    win_length: int = _h(1024, "cold", "STFT window", 16, 8192)
    n_mel_channels: int = _h(80, "cold", "mel bands", 8, 512)
    mel_fmin: float = _h(0.0, "cold", "lowest mel frequency (Hz)", 0.0, 48000.0)
    mel_fmax: float = _h(8000.0, "cold", "highest mel frequency (Hz)", 100.0, 48000.0)
    mel_normalize: bool = _h(
        False, "cold", "scale log-mels to zero mean and unit variance per band (training-set stats)"
    )
    # --- run (cold) -----------------------------------------------------------------
    seed: int = _h(1234, "cold", "seed for weights, data order and dropout", 0, 2**31 - 1)
    fp16_run: bool = _h(False, "cold", "mixed precision (CUDA only)")
    # --- testing (hot) --------------------------------------------------------------
    inject_nan_at_step: int = _h(
        -1, "hot", "tests only: make the loss NaN at this global step, once per trainer (-1: never)", -1, 2**62
    )

    def replace(self, **changes: Any) -> HParams:
        """A copy with ``changes`` applied; every name and value is checked."""
        return dataclasses.replace(self, **{name: coerce(name, value) for name, value in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HParams:
        return cls().replace(**values)

    def diff(self, other: HParams) -> dict[str, tuple[Any, Any]]:
        """``{name: (ours, theirs)}`` for every parameter that differs."""
        return {n: (getattr(self, n), getattr(other, n)) for n in NAMES if getattr(self, n) != getattr(other, n)}

    def cold_hash(self) -> str:
        """A hash of the cold parameters: two checkpoints can share a run only if these match."""
        cold = {n: getattr(self, n) for n in NAMES if SPECS[n].hclass == "cold" and n != "seed"}
        return hashlib.sha256(json.dumps(cold, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class HParamSpec:
    name: str
    type: type
    default: Any
    hclass: HClass
    doc: str
    low: float | None
    high: float | None

    def announce(self) -> dict[str, Any]:
        """The worker's announcement of this parameter (WorkerHello.hparams[name])."""
        return {
            "type": self.type.__name__,
            "default": self.default,
            "class": self.hclass,
            "low": self.low,
            "high": self.high,
            "doc": self.doc,
        }


_TYPES = {"float": float, "int": int, "bool": bool}
SPECS: dict[str, HParamSpec] = {
    f.name: HParamSpec(
        f.name,
        _TYPES[str(f.type)],
        f.default,
        f.metadata["class"],
        f.metadata["doc"],
        f.metadata["low"],
        f.metadata["high"],
    )
    for f in dataclasses.fields(HParams)
}
NAMES = tuple(SPECS)


def coerce(name: str, value: Any) -> Any:
    """``value`` as the declared type of ``name``, within its range; HParamError naming both otherwise."""
    spec = SPECS.get(name)
    if spec is None:
        raise HParamError(f"unknown hyperparameter {name!r}")
    if spec.type is bool:
        if not isinstance(value, bool):
            raise HParamError(f"{name}: expected a bool, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HParamError(f"{name}: expected {spec.type.__name__}, got {value!r}")
    if spec.type is int:
        if isinstance(value, float) and not value.is_integer():
            raise HParamError(f"{name}: expected an int, got {value!r}")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise HParamError(f"{name}: must be finite, got {value!r}")
    if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
        raise HParamError(f"{name}: {value!r} is outside [{spec.low}, {spec.high}]")
    return value


def classify(names: list[str] | tuple[str, ...] | set[str]) -> dict[str, HClass]:
    return {n: SPECS[n].hclass for n in names}


def announcement() -> dict[str, dict[str, Any]]:
    """Every parameter with its type, default, range and class (for WorkerHello)."""
    return {name: spec.announce() for name, spec in SPECS.items()}


# --- NVIDIA's --hparams "name=value,name=[a,b]" ---------------------------------------


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise HParamError(f"--hparams: unbalanced ']' at position {i}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise HParamError("--hparams: unbalanced '['")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_value(name: str, raw: str, default: Any) -> Any:
    """NVIDIA's rule: the type comes from the default; bools take true/false/True/False/0/1; ints refuse floats."""
    if isinstance(default, bool):
        if raw in ("true", "True", "1"):
            return True
        if raw in ("false", "False", "0"):
            return False
        raise HParamError(f"--hparams: {name} expects a bool (true/false/True/False/0/1), got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise HParamError(f"--hparams: {name} expects an int, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise HParamError(f"--hparams: {name} expects a float, got {raw!r}") from None
    if isinstance(default, list):
        inner = raw.strip()
        if not (inner.startswith("[") and inner.endswith("]")):
            raise HParamError(f"--hparams: {name} expects a list [a,b], got {raw!r}")
        return [item.strip() for item in inner[1:-1].split(",") if item.strip()]
    return raw


def parse_hparams_string(text: str, base: HParams | None = None) -> HParams:
    """``base`` (the defaults) with NVIDIA's ``--hparams`` string applied; unknown or repeated names are errors."""
    hp, _ = parse_hparams_with_extras(text, base, {})
    return hp


def parse_hparams_with_extras(
    text: str, base: HParams | None, extras: dict[str, Any]
) -> tuple[HParams, dict[str, Any]]:
    """Like ``parse_hparams_string``, also accepting the names in ``extras`` (typed by their defaults).

    The standalone ``train.py`` takes NVIDIA's loop settings (``epochs``,
    ``iters_per_checkpoint``, ``training_files``, …) this way; they are not model
    hyperparameters and never reach ``HParams``.
    """
    base = base or HParams()
    changes: dict[str, Any] = {}
    extra_values = dict(extras)
    seen: set[str] = set()
    for part in _split_top_level(text):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise HParamError(f"--hparams: expected name=value, got {part!r}")
        if name not in SPECS and name not in extras:
            raise HParamError(f"--hparams: unknown hyperparameter {name!r}")
        if name in seen:
            raise HParamError(f"--hparams: {name} is given twice")
        seen.add(name)
        if name in SPECS:
            changes[name] = _parse_value(name, raw.strip(), getattr(base, name))
        else:
            extra_values[name] = _parse_value(name, raw.strip(), extras[name])
    return base.replace(**changes), extra_values


def format_hparams_string(values: dict[str, Any]) -> str:
    """The inverse of ``parse_hparams_string`` for scalar values (refuses what would break the format)."""
    parts = []
    for name, value in values.items():
        text = repr(value) if isinstance(value, float) else str(value)
        if any(c in text for c in ",=[]") or not text:
            raise HParamError(f"{name}: value {text!r} cannot be written in the --hparams format")
        parts.append(f"{name}={text}")
    return ",".join(parts)


# --- named starting points --------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    # NVIDIA's published LJSpeech model: the dataclass defaults.
    "nvidia": {},
    # The embedded default's model: ~2 M parameters, trains at a few steps/s on 2 CPU cores.
    "demo": {
        "symbols_embedding_dim": 128,
        "encoder_embedding_dim": 128,
        "attention_rnn_dim": 256,
        "attention_dim": 64,
        "decoder_rnn_dim": 256,
        "prenet_dim": 128,
        "postnet_embedding_dim": 128,
        "n_frames_per_step": 3,
        "batch_size": 16,
        "max_decoder_steps": 400,
        "mel_normalize": True,
    },
    # Seconds per segment: for tests.
    "tiny": {
        "symbols_embedding_dim": 32,
        "encoder_embedding_dim": 32,
        "encoder_n_convolutions": 1,
        "attention_rnn_dim": 48,
        "attention_dim": 16,
        "attention_location_n_filters": 4,
        "attention_location_kernel_size": 7,
        "decoder_rnn_dim": 48,
        "prenet_dim": 32,
        "postnet_embedding_dim": 16,
        "postnet_n_convolutions": 2,
        "n_mel_channels": 24,
        "n_frames_per_step": 3,
        "batch_size": 4,
        "max_decoder_steps": 200,
        "mel_normalize": True,
    },
}


def preset(name: str) -> HParams:
    if name not in PRESETS:
        raise HParamError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return HParams().replace(**PRESETS[name])
