"""The state's YAML writer: whatever it writes, PyYAML reads back as exactly the same data."""

from __future__ import annotations

import math
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from smart_tuner.state import yamlout

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "yes",
            "No",
            "ON",
            "null",
            "~",
            "1e5",
            "0x1f",
            "1_000",
            ".5",
            "12:30",
            "- a",
            "a: b",
            "#x",
            "",
            " lead",
            "trail ",
            "multi\nline",
            "tab\tx",
            "\u00e9t\u00e9",
            "\U0001f600",
            "'q'",
            '"dq"',
        ]
    )
)
plain = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=12), plain, max_size=6))
def test_safe_load_reads_back_exactly_what_was_written(doc: dict[str, Any]) -> None:
    assert yaml.safe_load(yamlout.dump(doc)) == doc


def test_special_floats_and_exponents() -> None:
    doc = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "tiny": 1e-05, "big": 1e16, "neg0": -0.0}
    back = yaml.safe_load(yamlout.dump(doc))
    assert math.isnan(back["nan"]) and back["inf"] == math.inf and back["ninf"] == -math.inf
    assert back["tiny"] == 1e-05 and isinstance(back["tiny"], float) and back["big"] == 1e16
    assert math.copysign(1, back["neg0"]) == -1


def test_block_style_is_readable() -> None:
    text = yamlout.dump({"run": {"run_id": "r1", "seed": 0}, "tags": ["a", "b"], "empty": {}, "none": []})
    assert text == "run:\n  run_id: r1\n  seed: 0\ntags:\n  - a\n  - b\nempty: {}\nnone: []\n"


def test_rendered_state_loads_back_as_its_plain_data() -> None:
    from smart_tuner.protocol import Envelope
    from smart_tuner.protocol import messages as m
    from smart_tuner.state import projection
    from smart_tuner.state.fold import replay
    from smart_tuner.state.serde import to_plain

    msgs: list[m.Message] = [
        m.RunStarted(
            run_id="r",
            config_hash="c" * 64,
            config={"search_space": {"lr": {"low": 1e-4}}},
            strategy="forks",
            seed=3,
            host="h",
            pid=1,
            version="0",
        ),
        m.TrialProposed(
            trial_id="t0",
            number=0,
            hparams={"learning_rate": 3e-3, "note": "yes"},
            sampler="tpe",
            reason="sampled: lr=3e-3",
            evidence={"candidates": [0.1, float("nan")]},
        ),
        m.SegmentScheduled(
            segment_id="s0",
            trial_id="t0",
            from_checkpoint=None,
            from_sha256=None,
            start_step=0,
            steps=100,
            hparams={"learning_rate": 3e-3},
            reason="first",
            evidence={},
        ),
        m.MetricsObserved(segment_id="s0", source="worker", step=5, metrics={"loss": float("inf")}),
    ]
    state = replay(Envelope.new(msg, actor="t").with_seq(i + 1) for i, msg in enumerate(msgs))
    loaded = yaml.safe_load(projection.render(state))
    expected = {"last_seq": 4, "config_hash": "c" * 64, **to_plain(state)}
    assert loaded["progress"]["last_metrics"]["loss"] == math.inf
    assert loaded["recent_decisions"][0]["type"] == "TrialProposed"
    assert loaded == expected
