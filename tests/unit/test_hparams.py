"""Hyperparameter declarations, NVIDIA's --hparams format and validation."""

from __future__ import annotations

import pytest

from smart_tuner.trainer.hparams import (
    NAMES,
    PRESETS,
    SPECS,
    HParamError,
    HParams,
    announcement,
    format_hparams_string,
    parse_hparams_string,
    parse_hparams_with_extras,
    preset,
)


def test_every_parameter_is_declared_once_with_a_class_and_a_valid_default() -> None:
    assert len(NAMES) == len(set(NAMES))
    for spec in SPECS.values():
        assert spec.hclass in ("hot", "warm", "cold"), spec.name
        assert isinstance(spec.default, spec.type), spec.name
        assert spec.doc
    assert SPECS["learning_rate"].hclass == "hot" and SPECS["batch_size"].hclass == "warm"
    assert SPECS["n_mel_channels"].hclass == "cold" and SPECS["n_frames_per_step"].hclass == "warm"


def test_nvidia_defaults() -> None:
    hp = HParams()
    assert (hp.learning_rate, hp.weight_decay, hp.grad_clip_thresh, hp.batch_size) == (1e-3, 1e-6, 1.0, 64)
    assert (hp.p_attention_dropout, hp.p_decoder_dropout, hp.gate_threshold) == (0.1, 0.1, 0.5)
    assert (hp.sampling_rate, hp.filter_length, hp.hop_length, hp.n_mel_channels) == (22050, 1024, 256, 80)


def test_parse_follows_nvidia_typing_rules() -> None:
    hp = parse_hparams_string("learning_rate=1e-2, batch_size=8,fp16_run=True,ema_decay=0")
    assert hp.learning_rate == 0.01 and hp.batch_size == 8 and hp.fp16_run is True and hp.ema_decay == 0.0
    for text in ("fp16_run=false", "fp16_run=False", "fp16_run=0"):
        assert parse_hparams_string(text).fp16_run is False
    assert parse_hparams_string("").learning_rate == 1e-3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("batch_size=8.5", "batch_size expects an int"),
        ("fp16_run=yes", "expects a bool"),
        ("learning_rate=fast", "learning_rate expects a float"),
        ("no_such=1", "unknown hyperparameter 'no_such'"),
        ("batch_size=8,batch_size=16", "given twice"),
        ("batch_size", "expected name=value"),
        ("learning_rate=2.0", "outside"),
        ("ignore_layers=[a,b", "unbalanced"),
    ],
)
def test_parse_rejects_bad_strings_naming_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(HParamError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        parse_hparams_string(text)


def test_extras_take_lists_and_are_kept_apart() -> None:
    hp, extra = parse_hparams_with_extras(
        "iters_per_checkpoint=50,ignore_layers=[embedding.weight,decoder.gate.weight],learning_rate=3e-3",
        None,
        {"iters_per_checkpoint": 1000, "ignore_layers": ["embedding.weight"]},
    )
    assert hp.learning_rate == 3e-3
    assert extra == {"iters_per_checkpoint": 50, "ignore_layers": ["embedding.weight", "decoder.gate.weight"]}


def test_format_round_trips_and_refuses_what_would_break_the_format() -> None:
    values = {"learning_rate": 0.003, "batch_size": 16, "fp16_run": False}
    assert parse_hparams_string(format_hparams_string(values)).to_dict().items() >= values.items()
    with pytest.raises(HParamError, match="cannot be written"):
        format_hparams_string({"training_files": "a,b"})


def test_replace_validates_types_and_ranges() -> None:
    with pytest.raises(HParamError, match="batch_size: expected an int"):
        HParams().replace(batch_size=2.5)
    with pytest.raises(HParamError, match="must be finite"):
        HParams().replace(learning_rate=float("nan"))
    with pytest.raises(HParamError, match="unknown hyperparameter"):
        HParams().replace(lr=1.0)
    assert HParams().replace(batch_size=8.0).batch_size == 8


def test_presets_and_announcement() -> None:
    for name in PRESETS:
        preset(name)
    with pytest.raises(HParamError, match="unknown preset"):
        preset("huge")
    ann = announcement()
    assert ann["learning_rate"]["class"] == "hot" and ann["learning_rate"]["type"] == "float"
    assert ann["batch_size"]["default"] == 64


def test_cold_hash_ignores_hot_and_warm_parameters() -> None:
    hp = preset("tiny")
    assert hp.cold_hash() == hp.replace(learning_rate=0.01, batch_size=2, n_frames_per_step=1).cold_hash()
    assert hp.cold_hash() != hp.replace(n_mel_channels=32).cold_hash()
