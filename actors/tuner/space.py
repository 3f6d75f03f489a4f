"""The search space, the Optuna sampler named in the config, and the study as a projection of the log.

    space = SearchSpace.from_config(config["search_space"])
    problems = space.check(announced)             # against the worker's WorkerHello
    study = rebuild_study(space, "tpe", seed, n_startup, results)
    params, inputs = ask(study, space)            # one proposal and what the sampler saw

The study is never stored: every decision rebuilds it from the evaluated trials on
record (``add_trial``), so a resumed run proposes from exactly what the log holds.
Optuna is imported here only, lazily (it costs ~0.5 s and the CLI should start fast).

Imports the standard library, Optuna (lazily) and nothing of the trainer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str  # loguniform, uniform, int, categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> optuna.distributions.BaseDistribution:
        from optuna import distributions as d

        if self.type == "categorical":
            return d.CategoricalDistribution(self.choices)
        assert self.low is not None and self.high is not None
        if self.type == "int":
            return d.IntDistribution(int(self.low), int(self.high), step=int(self.step or 1))
        return d.FloatDistribution(self.low, self.high, log=self.type == "loguniform", step=self.step)

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in self.choices
        assert self.low is not None and self.high is not None
        return isinstance(value, int | float) and not isinstance(value, bool) and self.low <= value <= self.high

    def clip(self, value: Any) -> Any:
        if self.type == "categorical":
            return value
        assert self.low is not None and self.high is not None
        value = min(max(value, self.low), self.high)
        return round(value) if self.type == "int" else float(value)

    def step_down(self, value: Any, factor: float) -> Any:
        """One step towards the low end: ``low + (value - low) / factor``, or the previous choice."""
        if self.type == "categorical":
            i = self.choices.index(value) if value in self.choices else 0
            return self.choices[max(i - 1, 0)]
        assert self.low is not None and self.high is not None
        if not isinstance(value, int | float) or isinstance(value, bool):
            return value
        if self.type == "loguniform":
            return self.clip(value / factor)
        return self.clip(self.low + (value - self.low) / factor)


@dataclass(frozen=True, slots=True)
class SearchSpace:
    params: tuple[Param, ...]

    @classmethod
    def from_config(cls, space: Mapping[str, Any]) -> SearchSpace:
        params = []
        for name, p in space.items():
            params.append(
                Param(
                    name=name,
                    type=p["type"],
                    low=p.get("low"),
                    high=p.get("high"),
                    step=p.get("step"),
                    choices=tuple(p.get("choices") or ()),
                )
            )
        return cls(tuple(params))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def check(self, announced: Mapping[str, Any]) -> list[str]:
        """Problems with tuning these parameters on a worker that announced ``announced`` (empty: fine)."""
        problems = []
        for p in self.params:
            spec = announced.get(p.name)
            if not isinstance(spec, Mapping):
                problems.append(f"search_space.{p.name}: the trainer has no hyperparameter {p.name!r}")
                continue
            if spec.get("class") == "cold":
                problems.append(f"search_space.{p.name}: {p.name} is cold (fixed for a run), it cannot be tuned")
            lo, hi = spec.get("low"), spec.get("high")
            values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
            for v in values:
                number = isinstance(v, int | float) and not isinstance(v, bool)
                if number and ((lo is not None and v < lo) or (hi is not None and v > hi)):
                    problems.append(f"search_space.{p.name}: {v!r} lies outside the trainer's range [{lo}, {hi}]")
        return problems


def make_sampler(name: str, seed: int, n_startup_trials: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=n_startup_trials, warn_independent_sampling=False
        )
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "qmc":  # scrambled Sobol points: a space-filling design, no model
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        grid: dict[str, Sequence[Any]] = {}
        for p in space.params:
            if p.type == "categorical":
                grid[p.name] = list(p.choices)
            else:
                assert p.low is not None and p.high is not None
                grid[p.name] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


@dataclass(frozen=True, slots=True)
class Result:
    """An evaluated trial, as the study sees it: its parameters and its (relative) value."""

    number: int
    params: Mapping[str, Any]
    value: float | None  # None: failed
    pruned_at: int | None = None  # stopped early by a race at this many steps: PRUNED, value its last reading


def rebuild_study(
    space: SearchSpace, sampler: str, seed: int, n_startup_trials: int, results: Sequence[Result]
) -> optuna.Study:
    """A fresh in-memory study holding ``results`` (what the log says was evaluated)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=make_sampler(sampler, seed, n_startup_trials, space))
    dists = {p.name: p.distribution() for p in space.params}
    for r in results:
        params = {p.name: space_value(p, r.params[p.name]) for p in space.params if p.name in r.params}
        if len(params) != len(dists) or not all(p.contains(params[p.name]) for p in space.params):
            continue  # outside today's space (a guard moved it, or the config changed): not evidence
        ok = r.value is not None and math.isfinite(r.value)
        if ok and r.value is not None and r.pruned_at is not None:  # ranked by how far they got, then the value
            trial = optuna.trial.create_trial(
                params=params,
                distributions=dists,
                state=optuna.trial.TrialState.PRUNED,
                intermediate_values={r.pruned_at: r.value},
            )
        else:
            state = optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL
            trial = optuna.trial.create_trial(
                params=params, distributions=dists, state=state, value=r.value if ok else None
            )
        study.add_trial(trial)
    return study


def space_value(param: Param, value: Any) -> Any:
    if param.type == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def ask(study: optuna.Study, space: SearchSpace) -> tuple[dict[str, Any], dict[str, Any]]:
    """One proposal from the study's sampler, and the sampler's inputs for the record."""
    import optuna

    trial = study.ask({p.name: p.distribution() for p in space.params})
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value if t.value is not None else math.inf, default=None)
    inputs = {
        "sampler": type(study.sampler).__name__,
        "trials_seen": len(complete),
        "pruned_seen": sum(1 for t in study.trials if t.state == optuna.trial.TrialState.PRUNED),
        "best_seen": {"params": dict(best.params), "value": best.value} if best is not None else None,
    }
    return dict(trial.params), inputs


# --- changes relative to an incumbent (forks) ---------------------------------------------------

LINEAR_SHIFT = 0.5  # a linear value moves by at most half its range in one change


def relative_space(space: SearchSpace, factor: float) -> SearchSpace:
    """The space of *changes* to an incumbent's hyperparameters, for a study whose values are
    "this change's objective / the incumbent's, in the same round" (so objectives measured at
    different steps, from different champions, stay comparable):

    * a log-scale value is multiplied by ``10**d``, ``d`` in ``[-log10(factor), log10(factor)]``;
    * a linear (or integer) value moves by ``d`` times its range, ``d`` in ``[-0.5, 0.5]``;
    * a categorical value is chosen as itself.

    The changes keep the parameters' names; ``apply_change`` and ``change_between`` convert."""
    span = math.log10(factor)
    out = []
    for p in space.params:
        if p.type == "categorical":
            out.append(p)
        elif p.type == "loguniform":
            out.append(Param(p.name, "uniform", -span, span))
        else:
            out.append(Param(p.name, "uniform", -LINEAR_SHIFT, LINEAR_SHIFT))
    return SearchSpace(tuple(out))


def apply_change(space: SearchSpace, change: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters ``change`` makes of ``current``, clipped into the space."""
    out: dict[str, Any] = {}
    for p in space.params:
        if p.name not in change:
            continue
        d, value = change[p.name], current[p.name]
        if p.type == "categorical":
            out[p.name] = d
        elif p.type == "loguniform":
            out[p.name] = p.clip(value * 10 ** float(d))
        else:
            assert p.low is not None and p.high is not None
            out[p.name] = p.clip(value + float(d) * (p.high - p.low))
    return out


def change_between(space: SearchSpace, new: Mapping[str, Any], old: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """The change that turns ``old`` into ``new`` (the inverse of ``apply_change``), within the
    relative space's bounds; parameters either side lacks are left out."""
    span = math.log10(factor)
    out: dict[str, Any] = {}
    for p in space.params:
        a, b = new.get(p.name), old.get(p.name)
        if a is None or b is None:
            continue
        if p.type == "categorical":
            out[p.name] = a
        elif p.type == "loguniform":
            if isinstance(a, int | float) and isinstance(b, int | float) and a > 0 < b:
                out[p.name] = min(max(math.log10(a / b), -span), span)
        else:
            assert p.low is not None and p.high is not None
            shift = (float(a) - float(b)) / (p.high - p.low)
            out[p.name] = min(max(shift, -LINEAR_SHIFT), LINEAR_SHIFT)
    return out
