"""Log layouts of the trainers people use, as rules from (directory, tag) to canonical metric names.

    layout = LAYOUTS["espnet2"]
    layout.name_of("loss", "exp/tensorboard/valid")     # -> "val_loss"
    detect({("", "training.loss"), ("", "grad.norm")})  # -> [Match(preset=nvidia_tacotron2, confidence=…), …]

One ``LogLayout`` per trainer family (REFERENCE.md, "Metric names in other frameworks"):
``nvidia_tacotron2``, ``coqui``, ``espnet2``, ``vits``, ``indextts`` and ``generic``
(canonical names and common spellings). Rules match on the directory's last component
*and* the tag, because ESPnet logs ``loss`` under both ``train/`` and ``valid/``; a rule
with directory ``""`` matches the tag anywhere. Each layout says whether its x-axis is
iterations or epochs (ESPnet's TensorBoard logs are per epoch).

``detect`` ranks the layouts for a set of observed (directory, tag) pairs by how much of
each layout's *signature* (its characteristic tags) was seen: the confidence is that
share, so a run that has logged only a few steps already names its trainer, and a log
with nothing characteristic falls to ``generic`` at a low confidence.

Users name a layout as a *preset* (``external.preset`` in the config, ``probe --preset``):
the word they know from other tools; in the code it is a ``LogLayout``, never to be
confused with the trainer's hyperparameter presets (``trainer.hparams.preset``).

Imports the standard library and ``protocol.metrics`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ...protocol import metrics as mx

Rule = tuple[str, str]  # (directory's last component or "", tag)


@dataclass(frozen=True, slots=True)
class LogLayout:
    name: str
    tensorboard: Mapping[Rule, str]
    x_axis: str  # "iteration" or "epoch"
    signature: frozenset[Rule]  # the tags that identify this trainer
    notes: str = ""
    # what candidates are compared on when the script logs no val_objective: the unweighted mel loss
    # where the trainer logs one (a weighted total mixes in weights the tuner may change)
    objective: str = mx.VAL_LOSS

    def name_of(self, tag: str, directory: str = "") -> str | None:
        leaf = directory.rstrip("/").rsplit("/", 1)[-1]
        found = self.tensorboard.get((leaf, tag)) or self.tensorboard.get(("", tag))
        base = lightning_step_base(tag)
        if found is None and base is not None:  # Lightning's on_step copy of a series: that series
            found = self.tensorboard.get((leaf, base)) or self.tensorboard.get(("", base))
        return found


# PyTorch Lightning's ``self.log(name, on_step=True, on_epoch=True)`` writes ``name_step`` (each
# step) and ``name_epoch`` (the epoch's mean, at the epoch's last step): the former is the series
# a preset's ``name`` means; the latter stays unmapped (an average over a changing model).
LIGHTNING_STEP, LIGHTNING_EPOCH = "_step", "_epoch"


def lightning_step_base(tag: str) -> str | None:
    """``train_loss`` for Lightning's ``train_loss_step``; None for any other tag."""
    return tag[: -len(LIGHTNING_STEP)] if tag.endswith(LIGHTNING_STEP) and len(tag) > len(LIGHTNING_STEP) else None


def _preset(
    name: str,
    x_axis: str,
    rules: Mapping[Rule, str],
    signature: Iterable[Rule],
    notes: str = "",
    objective: str = mx.VAL_LOSS,
) -> LogLayout:
    return LogLayout(
        name=name,
        tensorboard=dict(rules),
        x_axis=x_axis,
        signature=frozenset(signature),
        notes=notes,
        objective=objective,
    )


NVIDIA = _preset(
    "nvidia_tacotron2",
    "iteration",
    {
        ("", "training.loss"): mx.TRAIN_LOSS,
        ("", "validation.loss"): mx.VAL_LOSS,
        ("", "grad.norm"): mx.GRAD_NORM,
        ("", "learning.rate"): mx.LEARNING_RATE,
        # not NVIDIA's own: our train.py's (and forks') unweighted objective and attention diagonality
        ("", "validation.objective"): mx.VAL_OBJECTIVE,
        ("", "validation.diagonality"): mx.DIAGONALITY,
    },
    [("", "training.loss"), ("", "validation.loss"), ("", "grad.norm"), ("", "learning.rate"), ("", "duration")],
    "NVIDIA/tacotron2 and its forks; stdout: Train loss <i> <loss> Grad Norm <g> <dt>s/it",
)

COQUI = _preset(
    "coqui",
    "iteration",
    {
        ("", "TrainIterStats/loss"): mx.TRAIN_LOSS,
        ("", "TrainIterStats/loss_0"): mx.TRAIN_LOSS,
        ("", "EvalStats/avg_loss"): mx.VAL_LOSS,
        ("", "EvalStats/avg_loss_0"): mx.VAL_LOSS,
        ("", "TrainIterStats/grad_norm"): mx.GRAD_NORM,
        ("", "TrainIterStats/current_lr"): mx.LEARNING_RATE,
        ("", "EvalStats/avg_postnet_loss"): mx.VAL_MEL_POST_LOSS,
        ("", "EvalStats/avg_stopnet_loss"): mx.VAL_GATE_LOSS,
        ("", "EvalStats/avg_ga_loss"): mx.VAL_GUIDED_ATTN_LOSS,
    },
    [
        ("", "TrainIterStats/loss"),
        ("", "TrainIterStats/grad_norm"),
        ("", "TrainIterStats/current_lr"),
        ("", "EvalStats/avg_loss"),
    ],
    "Coqui TTS's trainer (several optimizers: loss_0, loss_1, ...)",
    # EvalStats/avg_loss is a weighted total (stop token, guided attention x5, SSIM...): it fell while the
    # postnet mel loss rose; the mel loss after the postnet is the unweighted measure
    objective=mx.VAL_MEL_POST_LOSS,
)

ESPNET2 = _preset(
    "espnet2",
    "epoch",
    {
        ("train", "loss"): mx.TRAIN_LOSS,
        ("valid", "loss"): mx.VAL_LOSS,
        ("train", "grad_norm"): mx.GRAD_NORM,
        ("train", "optim0_lr0"): mx.LEARNING_RATE,
        ("valid", "bce_loss"): mx.VAL_GATE_LOSS,
        ("valid", "attn_loss"): mx.VAL_GUIDED_ATTN_LOSS,
    },
    [("train", "loss"), ("valid", "loss"), ("train", "optim0_lr0"), ("train", "grad_norm")],
    "ESPnet2: tensorboard/train and tensorboard/valid, x = epoch",
)

VITS = _preset(
    "vits",
    "iteration",
    {
        ("", "loss/g/total"): mx.TRAIN_LOSS,
        ("", "grad_norm_g"): mx.GRAD_NORM,
        ("", "learning_rate"): mx.LEARNING_RATE,
        ("", "loss/g/mel"): mx.TRAIN_MEL_LOSS,
    },
    [("", "loss/g/total"), ("", "loss/d/total"), ("", "grad_norm_g"), ("", "grad_norm_d")],
    "VITS (original): generator/discriminator losses; no validation loss",
)

INDEXTTS = _preset(
    "indextts",
    "iteration",
    {
        ("", "mel_loss"): mx.TRAIN_LOSS,
        ("", "text_loss"): mx.TRAIN_TEXT_LOSS,
        ("", "mel_top1"): mx.TRAIN_MEL_TOP1,
        ("", "grad_norm"): mx.GRAD_NORM,
        ("", "lr"): mx.LEARNING_RATE,
    },
    [("", "text_loss"), ("", "mel_loss"), ("", "mel_top1")],
    "IndexTTS-style GPT trainers (text and mel token losses); train_loss is the mel loss",
)

GENERIC = _preset(
    "generic",
    "iteration",
    {
        ("", "train_loss"): mx.TRAIN_LOSS,
        ("", "val_loss"): mx.VAL_LOSS,
        ("", "grad_norm"): mx.GRAD_NORM,
        ("", "learning_rate"): mx.LEARNING_RATE,
        ("", "lr"): mx.LEARNING_RATE,
        ("", "loss"): mx.TRAIN_LOSS,
        ("", "train/loss"): mx.TRAIN_LOSS,
        ("", "val/loss"): mx.VAL_LOSS,
        ("", "valid/loss"): mx.VAL_LOSS,
        ("", "val_objective"): mx.VAL_OBJECTIVE,
        ("", "diagonality"): mx.DIAGONALITY,
    },
    [("", "train_loss"), ("", "val_loss"), ("", "train/loss"), ("", "val/loss"), ("", "loss"), ("", "lr")],
    "canonical names and common spellings",
)

LAYOUTS: Mapping[str, LogLayout] = {p.name: p for p in (NVIDIA, COQUI, ESPNET2, VITS, INDEXTTS, GENERIC)}


@dataclass(frozen=True, slots=True)
class UserMapping:
    """A user's own names (``external.metrics``), checked before any preset's.

    Keys are a tag (or an MLflow key) as logged, or ``DIR:tag`` for a tag under a directory
    whose last component is DIR (ESPnet's ``valid:loss``); values are canonical names.
    """

    rules: Mapping[Rule, str]

    @classmethod
    def parse(cls, metrics: Mapping[str, str]) -> UserMapping:
        rules: dict[Rule, str] = {}
        for key, name in metrics.items():
            directory, sep, tag = key.partition(":")
            rules[(directory, tag) if sep else ("", key)] = name
        return cls(rules)

    def name_of(self, tag: str, directory: str = "") -> str | None:
        leaf = directory.rstrip("/").rsplit("/", 1)[-1]
        return self.rules.get((leaf, tag)) or self.rules.get(("", tag))

    def over(self, fallback: Callable[[str, str], str | None]) -> Callable[[str, str], str | None]:
        """A (tag, directory) mapping: these rules first, then ``fallback``."""
        return lambda tag, directory: self.name_of(tag, directory) or fallback(tag, directory)


GENERIC_WEIGHT = 0.5  # generic names are weak evidence: a trainer's own preset wins a tie


@dataclass(frozen=True, slots=True)
class Match:
    preset: LogLayout
    confidence: float  # share of the preset's signature seen (generic: halved)
    seen: frozenset[Rule]


def detect(observed: Iterable[Rule]) -> list[Match]:
    """Every preset with some of its signature in ``observed`` (directory leaf, tag), best first."""
    pairs = {(d.rstrip("/").rsplit("/", 1)[-1], t) for d, t in observed}
    pairs |= {(d, base) for d, t in pairs if (base := lightning_step_base(t)) is not None}
    tags = {t for _, t in pairs}
    out = []
    for p in LAYOUTS.values():
        seen = frozenset(r for r in p.signature if (r in pairs if r[0] else r[1] in tags))
        if seen:
            confidence = len(seen) / len(p.signature) * (GENERIC_WEIGHT if p is GENERIC else 1.0)
            out.append(Match(p, round(confidence, 3), seen))
    return sorted(out, key=lambda mt: -mt.confidence)
