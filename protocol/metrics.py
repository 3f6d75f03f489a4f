"""The canonical metric names, defined once.

    from ..protocol import metrics as mx
    event.metrics[mx.VAL_OBJECTIVE]

Every part that names a metric takes it from here: the worker and the trainer (what
they report), the watcher's sources and log layouts (what a user's logs map onto), the
reducers, the guards, the stopper and the tuner (what they read). A source may pass
any other name through, but only these have a meaning to Smart Tuner. Imports nothing.
"""

from __future__ import annotations

# Training, averaged over the steps since the last report.
TRAIN_LOSS = "train_loss"  # the weighted training loss (guided attention and gate weights included)
TRAIN_MEL_LOSS = "train_mel_loss"
TRAIN_MEL_POST_LOSS = "train_mel_post_loss"
TRAIN_GATE_LOSS = "train_gate_loss"
TRAIN_GUIDED_ATTN_LOSS = "train_guided_attn_loss"
TRAIN_OBJECTIVE = "train_objective"  # unweighted: mel after postnet + gate, as VAL_OBJECTIVE
GRAD_NORM = "grad_norm"  # before clipping
GRAD_NORM_MAX = "grad_norm_max"
LEARNING_RATE = "learning_rate"
GUIDED_ATTN_WEIGHT_EFF = "guided_attn_weight_eff"  # the guided-attention weight after its decay
STEPS_PER_S = "steps_per_s"

# Validation on the selection set.
VAL_LOSS = "val_loss"
VAL_MEL_LOSS = "val_mel_loss"
VAL_MEL_POST_LOSS = "val_mel_post_loss"
VAL_GATE_LOSS = "val_gate_loss"
VAL_GUIDED_ATTN_LOSS = "val_guided_attn_loss"
VAL_OBJECTIVE = "val_objective"  # what candidates are compared on
DIAGONALITY = "diagonality"
FOCUS_RATE = "focus_rate"
ATTENTION_ENTROPY = "attention_entropy"
COVERAGE = "coverage"
GATE_ACCURACY = "gate_accuracy"

# Free-running on a fixed set of sentences (trainer/free_running.py): the model decodes from its
# own output, as in synthesis. FR_MCD_DTW is in dB; FR_LENGTH_RATIO is 1 when lengths match.
FR_GATE_STOP_RATE = "fr_gate_stop_rate"
FR_LENGTH_RATIO = "fr_length_ratio"
FR_MCD_DTW = "fr_mcd_dtw"
FR_DIAGONALITY = "fr_diagonality"
FR_FOCUS_RATE = "fr_focus_rate"

# Reported by other trainers' logs only (IndexTTS-style GPT trainers).
TRAIN_TEXT_LOSS = "train_text_loss"
TRAIN_MEL_TOP1 = "train_mel_top1"

# What our worker announces, in its order.
WORKER_METRICS = (
    TRAIN_LOSS,
    TRAIN_MEL_LOSS,
    TRAIN_MEL_POST_LOSS,
    TRAIN_GATE_LOSS,
    TRAIN_GUIDED_ATTN_LOSS,
    TRAIN_OBJECTIVE,
    GRAD_NORM,
    GRAD_NORM_MAX,
    LEARNING_RATE,
    GUIDED_ATTN_WEIGHT_EFF,
    STEPS_PER_S,
    VAL_LOSS,
    VAL_MEL_LOSS,
    VAL_MEL_POST_LOSS,
    VAL_GATE_LOSS,
    VAL_GUIDED_ATTN_LOSS,
    VAL_OBJECTIVE,
    DIAGONALITY,
    FOCUS_RATE,
    ATTENTION_ENTROPY,
    COVERAGE,
    GATE_ACCURACY,
    FR_GATE_STOP_RATE,
    FR_LENGTH_RATIO,
    FR_MCD_DTW,
    FR_DIAGONALITY,
    FR_FOCUS_RATE,
)
