"""The Optuna storage mirror: a real sqlite storage, written from a scripted tuning run's state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import optuna
import pytest

from smart_tuner.actors.projections.optuna_mirror import TRIAL_ATTR, OptunaMirror
from smart_tuner.actors.tuner.objectives import score
from tests.unit.test_tuning_loop import ScriptedSupervisor, config, run_loop


@pytest.mark.parametrize("strategy", ["forks", "pbt"])
def test_every_trial_is_mirrored_once_with_its_state_and_its_curve(tmp_path: Path, strategy: str) -> None:
    state, _ = asyncio.run(run_loop(tmp_path, config(), ScriptedSupervisor(), strategy=strategy))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert OptunaMirror(url).sync(state) == len(state.tuning.trials)
    assert OptunaMirror(url).sync(state) == 0  # a restarted mirror finds what it wrote: no duplicates
    assert state.run is not None
    study = optuna.load_study(study_name=state.run.run_id, storage=url)
    by_id = {t.user_attrs[TRIAL_ATTR]: t for t in study.get_trials()}
    assert set(by_id) == set(state.tuning.trials) and len(study.get_trials()) == len(by_id)
    assert study.user_attrs["strategy"] == strategy
    for tid, trial in state.tuning.trials.items():
        mirrored = by_id[tid]
        segs = [s for s in state.tuning.segments.values() if s.trial_id == tid and s.status == "finished"]
        curve = {s.end_step: score(s.metrics).objective for s in segs}
        assert mirrored.intermediate_values == curve
        space = state.run.config["search_space"]
        assert mirrored.params == {k: v for k, v in trial.hparams.items() if k in space} and mirrored.params
        if trial.status == "pruned":
            assert mirrored.state == optuna.trial.TrialState.PRUNED and mirrored.value is None
        else:
            assert mirrored.state == optuna.trial.TrialState.COMPLETE and mirrored.value == curve[max(curve)]
    winners = {r.winner for r in state.tuning.rounds}
    assert {t for t, tr in by_id.items() if tr.user_attrs["winner"]} == winners


def test_only_decided_rounds_are_mirrored(tmp_path: Path) -> None:
    from dataclasses import replace

    state, _ = asyncio.run(run_loop(tmp_path, config(), ScriptedSupervisor()))
    last = state.tuning.rounds[-1]
    undecided = replace(
        state, tuning=replace(state.tuning, rounds=(*state.tuning.rounds[:-1], replace(last, winner=None)))
    )
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    mirror = OptunaMirror(url)
    assert mirror.sync(undecided) == len(state.tuning.trials) - len(last.trials)
    assert mirror.sync(state) == len(last.trials)  # once decided
