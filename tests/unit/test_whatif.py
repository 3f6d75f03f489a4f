"""``replay --what-if``: the deciding cores re-run over a recorded run with changed settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smart_tuner.actors.whatif import parse_overrides, report, what_if
from smart_tuner.protocol import messages as m
from smart_tuner.state.config import ConfigError
from smart_tuner.state.fold import replay
from smart_tuner.state.queries import steps_spent
from tests.unit.test_tuning_loop import ScriptedSupervisor, config, run_loop


@pytest.mark.parametrize("strategy", ["forks", "pbt", "trials"])
def test_with_the_recorded_settings_every_decision_is_made_again_to_the_end(tmp_path: Path, strategy: str) -> None:
    _, events = asyncio.run(run_loop(tmp_path, config(), ScriptedSupervisor(), strategy))
    result = what_if(events, {})
    assert result.divergence is None and result.events == len(events)
    decided = {e.seq for p in result.points for e in p.recorded}
    deciders = {"tuner", "guards", "stopper"}
    assert decided == {e.seq for e in events if e.actor in deciders and e.type != "ActorReady"}  # every one compared
    assert report(result)[-1].startswith(f"no difference over the {len(events)} events")


def test_a_wider_margin_keeps_the_champion_where_a_challenger_won(tmp_path: Path) -> None:
    _, events = asyncio.run(run_loop(tmp_path, config(), ScriptedSupervisor()))
    won = next(e for e in events if isinstance(e.data, m.ChampionPromoted) and "beat the champion" in e.data.reason)
    result = what_if(events, {"forks.margin": 0.9})
    d = result.divergence
    assert d is not None and d.actor == "tuner"
    assert won.seq in {e.seq for e in d.recorded}  # the first promotion a challenger won is where it differs
    assert any(isinstance(c, m.ChampionPromoted) and c.kept for c in d.counterfactual)  # the champion stands
    lines = report(result)
    assert any(line.startswith("first difference: after event #") for line in lines)
    assert "past this point nothing was observed" in lines[-1]


def test_a_smaller_budget_stops_earlier(tmp_path: Path) -> None:
    _, events = asyncio.run(run_loop(tmp_path, config(), ScriptedSupervisor()))
    result = what_if(events, {"budget.max_steps": 100})
    d = result.divergence
    assert d is not None
    # the decisions part no later than where the recorded run had committed 100 steps of training
    at = replay(e for e in events if e.seq <= d.seq)
    assert steps_spent(at) <= 100 < steps_spent(replay(events))


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["forks.margin"], "expected KEY=VALUE"),
        (["forks..margin=1"], "expected KEY=VALUE"),
        ([], "no KEY=VALUE given"),
    ],
)
def test_malformed_overrides_are_refused_by_name(items: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_overrides(items)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"forks.nonsense": 1}, "forks.nonsense"),
        ({"forks.margin": -1}, "forks.margin"),
        ({"budget.max_steps.x": 1}, "'max_steps' is not a section"),
    ],
)
def test_invalid_settings_are_refused_naming_the_key(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    _, events = asyncio.run(run_loop(tmp_path, config(budget={"max_steps": 60}), ScriptedSupervisor()))
    with pytest.raises(ConfigError, match=message):
        what_if(events, overrides)
