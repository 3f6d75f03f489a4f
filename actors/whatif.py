"""``replay --what-if``: the decision policy re-run with changed settings over a run's record.

The deciding actors (tuner, guard rails, stop controller) are pure cores: ``react(env, state)``
gives what they propose after each committed event, reading their settings from the config
``RunStarted`` recorded. So the run's own events are folded again with that config changed,
each core reacts to each event as it did live, and what it proposes now is set beside what it
proposed then (the events whose ``cause`` is that event, from that actor), up to the first
difference. Past it nothing was observed: the metrics on record came from the recorded
decisions, not from the counterfactual ones (``run --fork-from`` trains the counterfactual).

Decisions an actor makes when it (re)starts (``resume``, no cause) are compared at its restart,
from the state just before the first of them. With the settings unchanged the counterfactual is
the record itself, to the end: ``what_if(events, {})`` checking that is part of the tests.

Imports ``protocol``, ``state`` and the deciding cores only.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from ..protocol import Envelope, Message, to_data
from ..protocol import messages as m
from ..state import timeline
from ..state.config.loader import ConfigError, to_recordable, validate_document
from ..state.model import TunerState
from ..state.reducers import apply
from .guards import GuardRails
from .runtime import ActorCore
from .stopper import Stopper
from .tuner import STRATEGIES, Tuner


def deciders() -> list[ActorCore]:
    return [Tuner(), GuardRails(), Stopper(available_strategies=STRATEGIES)]


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``key.sub=value`` pairs (values read as YAML scalars) into a mapping of dotted keys."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"--what-if {item!r}: expected KEY=VALUE with a dotted config key, e.g. forks.margin=0.05"
            )
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--what-if {item!r}: the value is not YAML: {exc}") from None
    if not out:
        raise ConfigError("--what-if: no KEY=VALUE given")
    return out


def changed_config(recorded: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded config with ``overrides`` set, validated as a config file would be."""
    document = set_keys(_thaw(recorded), overrides, "--what-if")
    return to_recordable(validate_document(document, "--what-if"))


def set_keys(document: dict[str, Any], overrides: Mapping[str, Any], flag: str) -> dict[str, Any]:
    """``document`` (a config as a file holds it) with each dotted key of ``overrides`` set, a missing or
    null section made; ``flag`` names the option in the error when a key goes through a value."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = document
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{flag} {key}: {part!r} is not a section of the config")
            node = child
        node[leaf] = value
    return document


def _thaw(value: Any) -> Any:
    """Plain dicts and lists (a decoded event holds read-only mappings and tuples)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return copy.deepcopy(value)


# What a decision records about itself rather than decides: its wording and its evidence (which
# names the settings, e.g. the margin it applied). Two decisions differing only there are the same.
_ABOUT = ("reason", "evidence")


def _packed(msg: Message) -> bytes:
    """A decision as compared: its type and data, not what it says about itself."""
    data = {k: v for k, v in to_data(msg).items() if k not in _ABOUT}
    packed: bytes = msgpack.packb([msg.TYPE, data], use_bin_type=True, default=str)
    return packed


@dataclass
class Point:
    """One decision point: after event ``seq`` (its ``trigger``), what ``actor`` proposed then and now."""

    seq: int
    trigger: str
    actor: str
    recorded: list[Envelope]
    counterfactual: list[Message]

    @property
    def same(self) -> bool:
        """The same decisions, in any order (which of two dropped trials is recorded first decides nothing)."""
        return sorted(map(_packed, (e.data for e in self.recorded))) == sorted(map(_packed, self.counterfactual))


@dataclass
class WhatIf:
    overrides: dict[str, Any]
    points: list[Point] = field(default_factory=list)  # every point with a decision, to the first difference
    divergence: Point | None = None
    events: int = 0  # the events replayed (up to the divergence, or all)


def what_if(events: Sequence[Envelope], overrides: Mapping[str, Any]) -> WhatIf:
    """Replay ``events`` with the config changed by ``overrides``; stop at the first difference."""
    result = WhatIf(overrides=dict(overrides))
    if not events or not isinstance(events[0].data, m.RunStarted):
        raise ConfigError("the log does not begin with RunStarted: nothing to replay")
    config = changed_config(events[0].data.config, overrides)
    cores = {core.name: core for core in deciders()}
    caused: dict[tuple[str, str], list[Envelope]] = defaultdict(list)
    for env in events:
        if env.cause is not None and env.actor in cores:
            caused[(env.cause, env.actor)].append(env)
    resumed: set[str] = set()  # the actors whose restart decisions were compared since the last start
    state = TunerState()
    for index, env in enumerate(events):
        if isinstance(env.data, (m.RunStarted, m.RunResumed)):
            resumed.clear()
        # an actor's first cause-less proposal since a start: its ``resume``, from the state before it
        if env.actor in cores and env.cause is None and env.actor not in resumed and env.type != m.ActorReady.TYPE:
            point = _resume_point(cores[env.actor], events, index, state)
            resumed.add(env.actor)
            if _record(result, point):
                return result
        if isinstance(env.data, m.ActorReady) and env.data.actor in cores:
            resumed.add(env.data.actor)
        folded = env
        if isinstance(env.data, m.RunStarted):
            folded = replace(env, data=replace(env.data, config=config))
        state = apply(state, folded)
        result.events = index + 1
        for name, core in cores.items():
            core.observe(folded)
            outs = core.react(folded, state)
            recorded = caused.get((env.id, name), [])
            point = Point(env.seq, timeline.describe(env), name, recorded, [o.message for o in outs])
            if recorded:
                core.proposed_seq = max(core.proposed_seq, recorded[-1].seq)
            if _record(result, point):
                return result
    return result


def _resume_point(core: ActorCore, events: Sequence[Envelope], index: int, state: TunerState) -> Point:
    """The cause-less proposals ``core`` made at a (re)start, from ``index`` to its ``ActorReady``."""
    recorded = []
    for env in events[index:]:
        if isinstance(env.data, m.ActorReady) and env.data.actor == core.name:
            break
        if env.actor == core.name and env.cause is None:
            recorded.append(env)
    outs = core.resume(state)
    if recorded:
        core.proposed_seq = max(core.proposed_seq, recorded[-1].seq)
    trigger = f"{core.name} (re)started at #{events[index].seq}: decisions due then"
    return Point(events[index].seq, trigger, core.name, recorded, [o.message for o in outs])


def _record(result: WhatIf, point: Point) -> bool:
    """Keep ``point`` if it decided anything; True at the first difference."""
    if point.recorded or point.counterfactual:
        result.points.append(point)
    if not point.same:
        result.divergence = point
        return True
    return False


def _gist(message: Message) -> str:
    reason = getattr(message, "reason", None)
    return f"{message.TYPE}: {reason}" if reason else message.TYPE


def report(result: WhatIf, *, width: int = 60, last: int = 12) -> list[str]:
    """The side-by-side lines ``replay --what-if`` prints."""
    changed = ", ".join(f"{k}={v!r}" for k, v in result.overrides.items())
    lines = [f"what if {changed}: the decisions on record and the counterfactual ones, event by event"]
    shown = result.points[-last:]
    if len(result.points) > len(shown):
        lines.append(f"  ({len(result.points) - len(shown)} earlier decision points were the same)")
    head = f"  {'#':>6} {'actor':<8} {'recorded':<{width}} | counterfactual"
    lines.append(head)
    for point in shown:
        marker = " " if point.same else "!"
        rec = [_gist(e.data) for e in point.recorded] or ["(nothing)"]
        cf = [_gist(c) for c in point.counterfactual] or ["(nothing)"]
        for i in range(max(len(rec), len(cf))):
            left = rec[i] if i < len(rec) else ""
            right = cf[i] if i < len(cf) else ""
            seq = f"{point.seq}" if i == 0 else ""
            actor = point.actor if i == 0 else ""
            lines.append(f"{marker} {seq:>6} {actor:<8} {left[:width]:<{width}} | {right[:width]}")
    if result.divergence is None:
        lines.append(f"no difference over the {result.events} events on record: these settings decide as the run did")
        return lines
    d = result.divergence
    lines.append("")
    lines.append(f"first difference: after event #{d.seq} ({d.trigger[:140]}), the {d.actor}")
    for e in d.recorded:
        lines.append(f"  decided then (#{e.seq}): {_gist(e.data)}")
    for c in d.counterfactual:
        lines.append(f"  would decide now:  {_gist(c)}")
    lines.append(
        "past this point nothing was observed: the metrics on record followed the recorded decisions. "
        "To see what these settings do, train it: run --fork-from RUN:SEGMENT with the changed config."
    )
    return lines
