"""Free-running evaluation: DTW and mel cepstral distortion against brute force, decoding on a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smart_tuner.protocol import metrics as mx
from smart_tuner.trainer.free_running import cepstra, dtw_mean_cost, free_run, mcd_dtw
from smart_tuner.trainer.hparams import HParams, preset
from smart_tuner.trainer.model import Tacotron2
from smart_tuner.trainer.text import SYMBOLS, text_to_ids


def brute_force_dtw(cost: np.ndarray) -> float:
    """Every cell's cheapest (total, length) by the textbook recurrence; ties go to the shorter path."""
    n, m = cost.shape
    best: dict[tuple[int, int], tuple[float, int]] = {(0, 0): (float(cost[0, 0]), 1)}
    for i in range(n):
        for j in range(m):
            if (i, j) == (0, 0):
                continue
            options = [best[p] for p in ((i - 1, j - 1), (i - 1, j), (i, j - 1)) if p in best]
            total, length = min(options)
            best[(i, j)] = (total + float(cost[i, j]), length + 1)
    total, length = best[(n - 1, m - 1)]
    return total / length


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (6, 1), (4, 7), (9, 9), (13, 5)])
def test_dtw_matches_the_textbook_recurrence(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        cost = rng.uniform(0.1, 3.0, size=shape)
        assert dtw_mean_cost(cost) == pytest.approx(brute_force_dtw(cost), rel=1e-9)


def test_dtw_follows_a_cheap_diagonal_and_counts_its_cells() -> None:
    cost = np.full((4, 4), 10.0)
    np.fill_diagonal(cost, 1.0)
    assert dtw_mean_cost(cost) == pytest.approx(1.0)  # 4 cells of cost 1
    with pytest.raises(ValueError, match="non-empty"):
        dtw_mean_cost(np.zeros((0, 3)))


def test_mcd_is_zero_for_the_same_speech_slower_or_louder_and_grows_with_difference() -> None:
    rng = np.random.default_rng(0)
    mel = rng.normal(-5.0, 2.0, size=(24, 40))
    assert mcd_dtw(mel, mel) == pytest.approx(0.0, abs=1e-6)
    slower = np.repeat(mel, 2, axis=1)  # every frame held twice: DTW absorbs the tempo
    assert mcd_dtw(slower, mel) == pytest.approx(0.0, abs=1e-6)
    louder = mel + 3.0  # a level shift lives in c0, which MCD leaves out
    assert mcd_dtw(louder, mel) == pytest.approx(0.0, abs=1e-6)
    near, far = mel + rng.normal(0, 0.1, mel.shape), mel + rng.normal(0, 1.0, mel.shape)
    assert 0 < mcd_dtw(near, mel) < mcd_dtw(far, mel)
    assert mcd_dtw(near, mel) == pytest.approx(mcd_dtw(mel, near))


def test_cepstra_leave_out_c0_and_keep_the_distance_of_the_log_mels() -> None:
    mel = np.random.default_rng(1).normal(size=(24, 3))
    c = cepstra(mel)
    assert c.shape == (3, 23)  # c1..c23: fewer bands than the 24 coefficients asked for
    centred = mel - mel.mean(axis=0)  # orthonormal DCT without c0 keeps the energy of the rest
    assert (c**2).sum() == pytest.approx((centred**2).sum())
    assert math.isclose(float(np.abs(cepstra(mel[:, :1] * 0 + 7.0)).max()), 0.0, abs_tol=1e-9)


# --- decoding a tiny model ----------------------------------------------------------------


def tiny_model(seed: int = 0) -> tuple[Tacotron2, HParams]:
    hp = preset("tiny")
    torch.manual_seed(seed)
    return Tacotron2(hp, len(SYMBOLS)), hp


def items(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    texts = ["the red boat.", "a cat sat on the mat, quietly.", "go!", "seven green trees stood by the road."]
    gen = torch.Generator().manual_seed(3)
    return [
        (torch.tensor(text_to_ids(texts[i % 4]), dtype=torch.long), torch.randn(24, 12 + 7 * i, generator=gen))
        for i in range(n)
    ]


def test_an_untrained_model_does_not_stop_and_is_cut_at_twice_each_reference() -> None:
    model, hp = tiny_model()
    with torch.no_grad():
        model.decoder.gate.bias.fill_(-50.0)  # the gate never fires
    sentences = items(5)
    result = free_run(model, sentences, hp, cap_ratio=2.0)
    r = hp.n_frames_per_step
    assert result.stopped == [False] * 5
    assert result.frames == [math.ceil(2.0 * mel.shape[1] / r) * r for _, mel in sentences]
    assert result.metrics[mx.FR_GATE_STOP_RATE] == 0.0
    assert result.metrics[mx.FR_LENGTH_RATIO] == pytest.approx(
        sum(f / mel.shape[1] for f, (_, mel) in zip(result.frames, sentences, strict=True)) / 5
    )
    assert [tuple(m.shape) for m in result.mels] == [(24, f) for f in result.frames]
    for name in (mx.FR_MCD_DTW, mx.FR_DIAGONALITY, mx.FR_FOCUS_RATE):
        assert math.isfinite(result.metrics[name])
    assert 0 <= result.metrics[mx.FR_DIAGONALITY] <= 1 and 0 < result.metrics[mx.FR_FOCUS_RATE] <= 1


def test_free_running_is_repeatable_leaves_the_mode_and_the_rng_alone() -> None:
    model, hp = tiny_model()
    model.train()
    torch.manual_seed(99)
    expected_next = torch.rand(1)
    torch.manual_seed(99)
    first = free_run(model, items(4), hp, seed=7, batch_size=2)
    assert torch.rand(1) == expected_next  # training's RNG is where it was
    assert model.training
    second = free_run(model, items(4), hp, seed=7, batch_size=2)
    assert first.metrics == second.metrics and first.frames == second.frames


def test_no_sentences_or_a_bad_cap_is_refused() -> None:
    model, hp = tiny_model()
    with pytest.raises(ValueError, match="at least one sentence"):
        free_run(model, [], hp)
    with pytest.raises(ValueError, match="cap_ratio must be > 0"):
        free_run(model, items(1), hp, cap_ratio=0)


def test_a_gate_that_fires_at_once_is_not_a_stop_in_time() -> None:
    model, hp = tiny_model()
    with torch.no_grad():
        model.decoder.gate.bias.fill_(50.0)
    sentences = items(3)  # references of 12, 19 and 26 frames: one decoder step (3 frames) is too short
    result = free_run(model, sentences, hp)
    assert result.stopped == [True] * 3 and result.frames == [hp.n_frames_per_step] * 3
    assert result.metrics[mx.FR_GATE_STOP_RATE] == 0.0
    short = [(text, mel[:, :4]) for text, mel in sentences]  # a 4-frame reference: 3 frames is in time
    assert free_run(model, short, hp).metrics[mx.FR_GATE_STOP_RATE] == 1.0
