"""Changes relative to an incumbent (``space.relative_space``): what forks' sampler proposes and learns from."""

from __future__ import annotations

import math

import pytest

from smart_tuner.actors.tuner.space import SearchSpace, apply_change, change_between, relative_space

SPACE = SearchSpace.from_config(
    {
        "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
        "p_decoder_dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        "batch_size": {"type": "int", "low": 8, "high": 64},
        "optimizer": {"type": "categorical", "choices": ["adam", "adamw"]},
    }
)
CURRENT = {"learning_rate": 1e-3, "p_decoder_dropout": 0.1, "batch_size": 16, "optimizer": "adam"}


def test_the_relative_space_spans_the_wide_factor_and_half_of_each_linear_range() -> None:
    rel = {p.name: p for p in relative_space(SPACE, 10.0).params}
    assert (rel["learning_rate"].low, rel["learning_rate"].high) == pytest.approx((-1.0, 1.0))
    assert (rel["p_decoder_dropout"].low, rel["p_decoder_dropout"].high) == (-0.5, 0.5)
    assert rel["batch_size"].type == "uniform" and rel["optimizer"].choices == ("adam", "adamw")


def test_a_change_applied_and_read_back_is_the_same_change() -> None:
    change = {"learning_rate": math.log10(3), "p_decoder_dropout": -0.1, "batch_size": 0.25, "optimizer": "adamw"}
    new = apply_change(SPACE, change, CURRENT)
    assert new["learning_rate"] == pytest.approx(3e-3)
    assert new["p_decoder_dropout"] == pytest.approx(0.05) and new["batch_size"] == 30 and new["optimizer"] == "adamw"
    back = change_between(SPACE, new, CURRENT, 10.0)
    assert back["learning_rate"] == pytest.approx(change["learning_rate"])
    assert back["p_decoder_dropout"] == pytest.approx(-0.1) and back["optimizer"] == "adamw"
    assert back["batch_size"] == pytest.approx(14 / 56)  # rounded to an integer on the way


def test_changes_stay_in_the_space_and_in_the_relative_bounds() -> None:
    new = apply_change(SPACE, {"learning_rate": 1.0, "p_decoder_dropout": -0.5}, {**CURRENT, "learning_rate": 1e-2})
    assert new == {"learning_rate": 3e-2, "p_decoder_dropout": 0.0}  # clipped to the space's ends
    far = change_between(
        SPACE,
        {"learning_rate": 3e-2, "p_decoder_dropout": 0.5},
        {"learning_rate": 1e-4, "p_decoder_dropout": 0.0},
        10.0,
    )
    assert far == {"learning_rate": 1.0, "p_decoder_dropout": 0.5}  # a jump larger than one change: at the bound
