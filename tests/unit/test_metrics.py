"""TTS validation metrics: known alignments give known values, and padding never counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smart_tuner.trainer.metrics import (
    alignment_image,
    alignment_metrics,
    attention_entropy,
    coverage,
    decoder_steps,
    diagonality,
    focus_rate,
    gate_accuracy,
    gate_stop_error,
    to_rgb,
)

# Far larger than any real attention weight: if padding leaked into a max or an argmax,
# the results would show it.
GARBAGE = 7.0


def _diagonal(t_dec: int, t_enc: int) -> torch.Tensor:
    """One-hot attention on the line from (0, 0) to (t_dec, t_enc)."""
    a = torch.zeros(t_dec, t_enc)
    for t in range(t_dec):
        a[t, (t * t_enc) // t_dec] = 1.0
    return a


def _stuck(t_dec: int, t_enc: int) -> torch.Tensor:
    a = torch.zeros(t_dec, t_enc)
    a[:, 0] = 1.0
    return a


def _uniform(t_dec: int, t_enc: int) -> torch.Tensor:
    return torch.full((t_dec, t_enc), 1.0 / t_enc)


def _batch(parts: list[torch.Tensor], t_dec: int, t_enc: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pads utterance alignments into (B, t_dec, t_enc), filling every padded cell with garbage."""
    batch = torch.full((len(parts), t_dec, t_enc), GARBAGE)
    for i, part in enumerate(parts):
        batch[i, : part.shape[0], : part.shape[1]] = part
    mel_lengths = torch.tensor([p.shape[0] for p in parts])
    text_lengths = torch.tensor([p.shape[1] for p in parts])
    return batch, text_lengths, mel_lengths


def test_perfect_diagonal_with_garbage_padding() -> None:
    alignments, text_lengths, mel_lengths = _batch([_diagonal(60, 20), _diagonal(40, 12)], 80, 30)
    metrics = alignment_metrics(alignments, text_lengths, mel_lengths)
    assert set(metrics) == {"diagonality", "focus_rate", "attention_entropy", "coverage"}
    assert metrics["diagonality"] == 1.0
    assert metrics["focus_rate"] == pytest.approx(1.0)
    assert metrics["attention_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["coverage"] == 1.0


def test_uniform_alignment() -> None:
    t_enc = 25
    alignments, text_lengths, mel_lengths = _batch([_uniform(100, t_enc)], 110, 32)
    assert attention_entropy(alignments, text_lengths, mel_lengths) == pytest.approx(1.0)
    assert focus_rate(alignments, text_lengths, mel_lengths) == pytest.approx(1.0 / t_enc)
    assert diagonality(alignments, text_lengths, mel_lengths) < 0.2
    # Every position gets 100/25 = 4 in total: attended, just not sharply.
    assert coverage(alignments, text_lengths, mel_lengths) == 1.0


def test_stuck_on_first_position_scores_about_the_band_share() -> None:
    alignments, text_lengths, mel_lengths = _batch([_stuck(200, 50)], 200, 60)
    # Hits only while t * 50/200 <= 5 (band 0.1 of 50), i.e. t <= 20: 21 of 200 steps.
    assert diagonality(alignments, text_lengths, mel_lengths) == pytest.approx(21 / 200)
    assert diagonality(alignments, text_lengths, mel_lengths, band=0.2) == pytest.approx(41 / 200)
    assert coverage(alignments, text_lengths, mel_lengths) == pytest.approx(1 / 50)
    assert focus_rate(alignments, text_lengths, mel_lengths) == pytest.approx(1.0)


@pytest.mark.parametrize(("t_dec", "t_enc"), [(90, 30), (31, 30), (30, 30), (7, 3)])
def test_any_slope_counts_as_diagonal(t_dec: int, t_enc: int) -> None:
    alignments, text_lengths, mel_lengths = _batch([_diagonal(t_dec, t_enc)], t_dec + 5, t_enc + 5)
    assert diagonality(alignments, text_lengths, mel_lengths) == 1.0


def test_mixed_slopes_in_one_batch_and_reversed_attention() -> None:
    steep, flat = _diagonal(90, 30), _diagonal(32, 30)
    alignments, text_lengths, mel_lengths = _batch([steep, flat], 100, 40)
    assert diagonality(alignments, text_lengths, mel_lengths) == 1.0
    # Reading the text backwards is as far from diagonal as it gets.
    backwards, text_lengths, mel_lengths = _batch([steep.flip(1)], 100, 40)
    assert diagonality(backwards, text_lengths, mel_lengths) < 0.15


def test_batch_of_different_lengths_is_weighted_by_decoder_steps() -> None:
    alignments, text_lengths, mel_lengths = _batch([_diagonal(60, 20), _stuck(20, 20)], 64, 24)
    # Stuck one: t * 20/20 <= max(1, 2) -> t in 0..2, 3 hits of 20. Pooled over 80 steps.
    assert diagonality(alignments, text_lengths, mel_lengths) == pytest.approx((60 + 3) / 80)
    # Coverage pools encoder positions: all 20 of the first, 1 of 20 of the second.
    assert coverage(alignments, text_lengths, mel_lengths) == pytest.approx(21 / 40)
    # Entropy is 0 for both (one-hot rows), whatever the padding holds.
    assert attention_entropy(alignments, text_lengths, mel_lengths) == pytest.approx(0.0, abs=1e-9)


def test_entropy_and_focus_of_a_two_way_split() -> None:
    half = torch.zeros(10, 4)
    half[:, :2] = 0.5
    alignments, text_lengths, mel_lengths = _batch([half], 12, 6)
    assert attention_entropy(alignments, text_lengths, mel_lengths) == pytest.approx(math.log(2) / math.log(4))
    assert focus_rate(alignments, text_lengths, mel_lengths) == pytest.approx(0.5)


def test_bad_lengths_raise() -> None:
    alignments, text_lengths, mel_lengths = _batch([_diagonal(10, 5)], 10, 5)
    with pytest.raises(ValueError, match="mel_lengths"):
        diagonality(alignments, text_lengths, torch.tensor([11]))
    with pytest.raises(ValueError, match="text_lengths"):
        focus_rate(alignments, torch.tensor([0]), mel_lengths)
    with pytest.raises(ValueError, match="alignments"):
        coverage(alignments[0], text_lengths, mel_lengths)


def test_decoder_steps_rounds_up() -> None:
    frames = torch.tensor([10, 11, 12, 1])
    assert decoder_steps(frames, 3).tolist() == [4, 4, 4, 1]
    assert decoder_steps(frames, 1).tolist() == frames.tolist()
    with pytest.raises(ValueError, match="r"):
        decoder_steps(frames, 0)


# ---------------------------------------------------------------------------------------------
# Gate
# ---------------------------------------------------------------------------------------------


def _gate(lengths: list[int], frames: int, logit: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that stop exactly on the last valid frame, and the matching targets (1 from there on)."""
    logits = torch.full((len(lengths), frames), -logit)
    targets = torch.zeros(len(lengths), frames)
    for i, n in enumerate(lengths):
        logits[i, n - 1] = logit
        targets[i, n - 1 :] = 1.0
    return logits, targets


def test_gate_accuracy_ignores_padding() -> None:
    logits, targets = _gate([10, 6], 12)
    lengths = torch.tensor([10, 6])
    assert gate_accuracy(logits, targets, lengths) == 1.0
    # Every padded frame now predicts "go on" against a target of "stop": it must not count.
    logits[0, 10:] = -5.0
    logits[1, 6:] = -5.0
    assert gate_accuracy(logits, targets, lengths) == 1.0
    # One wrong valid frame out of 16 does count.
    logits[1, 0] = 5.0
    assert gate_accuracy(logits, targets, lengths) == pytest.approx(15 / 16)


def test_gate_accuracy_uses_sigmoid_against_the_threshold() -> None:
    logits = torch.tensor([[0.1]])  # sigmoid(0.1) = 0.525
    targets = torch.tensor([[1.0]])
    lengths = torch.tensor([1])
    assert gate_accuracy(logits, targets, lengths, threshold=0.5) == 1.0
    assert gate_accuracy(logits, targets, lengths, threshold=0.6) == 0.0
    # sigmoid(-0.1) = 0.475: a stop at threshold 0.45, although the logit itself is below it.
    assert gate_accuracy(torch.tensor([[-0.1]]), targets, lengths, threshold=0.45) == 1.0


def test_gate_stop_error_exact_early_and_late() -> None:
    lengths = torch.tensor([20, 10])
    exact, _ = _gate([20, 10], 24)
    assert gate_stop_error(exact, lengths) == 0.0

    early = exact.clone()
    early[0, 5] = 5.0  # first stop at 5, truth is 19: 14 frames of 20 too early
    assert gate_stop_error(early, lengths) == pytest.approx((14 / 20 + 0.0) / 2)

    late = torch.full((2, 24), -5.0)
    late[1, 9] = 5.0
    late[0, 20:] = 5.0  # stops only in padding: seen as no stop, one frame past the end
    assert gate_stop_error(late, lengths) == pytest.approx((1 / 20 + 0.0) / 2)
    assert gate_stop_error(late, lengths) > 0.0


def test_gate_stop_error_threshold_applies_to_probabilities() -> None:
    logits = torch.full((1, 8), -5.0)
    logits[0, 2] = 0.1  # probability 0.525
    logits[0, 7] = 5.0
    lengths = torch.tensor([8])
    assert gate_stop_error(logits, lengths, threshold=0.5) == pytest.approx(5 / 8)
    assert gate_stop_error(logits, lengths, threshold=0.6) == 0.0


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def test_alignment_image_crops_and_puts_position_zero_at_the_bottom() -> None:
    alignment = torch.full((30, 12), GARBAGE)
    valid = torch.zeros(20, 8)
    valid[0, 0] = 0.5  # first decoder step on the first token
    valid[19, 7] = 0.25  # last step on the last token
    alignment[:20, :8] = valid
    image = alignment_image(alignment, text_length=8, mel_length=20)
    assert image.shape == (8, 20) and image.dtype == np.uint8
    assert image[-1, 0] == 255  # bottom-left: position 0, step 0, scaled by the valid max only
    assert image[0, -1] == 128  # top-right: 0.25 / 0.5 * 255 rounded
    assert int(image.sum()) == 255 + 128


def test_alignment_image_of_zeros_and_bad_lengths() -> None:
    assert not alignment_image(torch.zeros(5, 4), 4, 5).any()
    with pytest.raises(ValueError, match="mel_length"):
        alignment_image(torch.zeros(5, 4), 4, 6)


def test_to_rgb_ramp() -> None:
    gray = np.array([[0, 255], [128, 64]], dtype=np.uint8)
    rgb = to_rgb(gray)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [68, 1, 84]  # viridis' dark purple
    assert rgb[0, 1].tolist() == [253, 231, 37]  # viridis' yellow
    # Brightness grows along the ramp, so a heat map still reads in grayscale.
    luminance = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert luminance[0, 0] < luminance[1, 1] < luminance[1, 0] < luminance[0, 1]
    with pytest.raises(ValueError, match="uint8"):
        to_rgb(gray.astype(np.float32))


def test_the_tts_panel_stacks_target_and_predicted_mels_over_a_gate_strip() -> None:
    from smart_tuner.trainer.metrics import tts_panel

    n_mels, frames = 8, 12
    target = torch.linspace(-4.0, 2.0, n_mels * 16).reshape(n_mels, 16)
    gate_target = torch.zeros(16)
    gate_target[frames - 1 :] = 1.0
    logits = torch.full((16,), -6.0)
    logits[frames - 2 :] = 6.0  # stops one frame early
    image = tts_panel(target, target.clone(), logits, gate_target, frames, 0.5)
    assert image.dtype == np.uint8
    assert image.shape == (n_mels + 3 + n_mels + 3 + 48, frames, 3)  # padding frames past the length are cut
    top, pred = image[:n_mels], image[n_mels + 3 : 2 * n_mels + 3]
    assert (top == pred).all()  # a perfect prediction looks like its target
    strip = image[2 * n_mels + 6 :]
    yellow = (strip == (250, 210, 40)).all(axis=2)
    assert yellow[-1, : frames - 2].all() and yellow[0, frames - 2 :].all()  # the predicted stop, low then high
    white = (strip == 255).all(axis=2)
    assert white[-1, frames - 2] and white.sum() == 1  # the target shows where the prediction differs from it
    with pytest.raises(ValueError, match="alike"):
        tts_panel(target, target[:, :5], logits, gate_target, frames, 0.5)
