"""A training script's console output as a metric source: regex rules over the lines of a log file.

    source = StdoutSource(run_dir / "logs" / "train.out", rules=STDOUT_RULES["nvidia_tacotron2"])
    readings = await source.poll()         # the complete lines written since the last poll

In external mode the supervisor sends the script's stdout and stderr to a file (and
``PYTHONUNBUFFERED=1`` keeps NVIDIA's per-iteration line from waiting in a buffer); this
source tails that file. Only complete lines are parsed: a line the writer has not ended
yet is kept for the next poll. A file that was replaced or truncated is read again from
its start.

A rule is a regex with a ``step`` group and one group per canonical metric name (the
group's name); a line matching several rules gives the values of each. Values that do
not parse as floats (``nan`` and ``inf`` do: a NaN loss is exactly what the guard rails
must see) are skipped. ``STDOUT_RULES`` holds the presets:

* ``nvidia_tacotron2``: ``Train loss <i> <loss> Grad Norm <g> <dt>s/it`` and
  ``Validation loss <i>: <loss>`` (NVIDIA's ``train.py``, and ours);
* ``generic``: ``step=<i>`` (or ``step <i>``/``iteration <i>``) with ``name=value`` pairs on
  the same line, the names mapped through the watcher's table (``loss`` -> ``train_loss``).

Imports the standard library and the watcher.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .filetail import FileTail
from .source import CANONICAL_NAMES, MetricSource, Reading, canonical

_FLOAT = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf|NaN|Inf)"


@dataclass(frozen=True, slots=True)
class LineRule:
    pattern: re.Pattern[str]

    def match(self, line: str) -> tuple[int, dict[str, float]] | None:
        found = self.pattern.search(line)
        if found is None:
            return None
        groups = found.groupdict()
        values = {k: _float(v) for k, v in groups.items() if k != "step" and v is not None}
        return int(groups["step"]), {k: v for k, v in values.items() if v is not None}


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


STDOUT_RULES: Mapping[str, tuple[LineRule, ...]] = {
    "nvidia_tacotron2": (
        LineRule(re.compile(rf"Train loss (?P<step>\d+) (?P<train_loss>{_FLOAT}) Grad Norm (?P<grad_norm>{_FLOAT})")),
        LineRule(re.compile(rf"Validation loss (?P<step>\d+): *(?P<val_loss>{_FLOAT})")),
    ),
    "generic": (),  # key=value pairs, see GenericRule
}

_STEP = re.compile(r"\b(?:step|iteration|iter|global_step)\s*[=: ]\s*(\d+)\b", re.IGNORECASE)
_PAIR = re.compile(rf"\b([A-Za-z][\w./]*)\s*[=:]\s*({_FLOAT})(?![\w.])")


def generic(line: str) -> tuple[int, dict[str, float]] | None:
    """``step=12 loss=0.5 grad_norm=1.2`` (or ``:``) -> (12, {train_loss: 0.5, grad_norm: 1.2})."""
    step = _STEP.search(line)
    if step is None:
        return None
    values: dict[str, float] = {}
    for key, raw in _PAIR.findall(line):
        name = canonical("stdout", key) or (key if key in CANONICAL_NAMES else None)
        value = _float(raw)
        if name is not None and value is not None:
            values[name] = value
    return (int(step.group(1)), values) if values else None


class StdoutSource(MetricSource):
    """The lines appended to ``path`` since the last poll, parsed by ``rules`` (or the generic rule)."""

    name = "stdout"

    def __init__(
        self,
        path: Path | str,
        rules: Sequence[LineRule] | None = None,
        segment_of: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.path = Path(path)
        self.rules = tuple(rules) if rules is not None else None  # None: the generic key=value rule
        self.segment_of = segment_of
        self.tail = FileTail(self.path)
        self.partial = b""
        self.lines = 0
        self.matched = 0

    async def poll(self) -> Sequence[Reading]:
        return await asyncio.to_thread(self.read)

    def read(self) -> list[Reading]:
        data, restarted = self.tail.read()
        if restarted:
            self.partial = b""  # replaced or truncated: the old file's unfinished line is void
        if not data:
            return []
        self.tail.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        by_step: dict[int, dict[str, float]] = {}
        order: list[int] = []
        for raw in complete:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            self.lines += 1
            for step, values in self._parse(line):
                if step not in by_step:
                    order.append(step)
                by_step.setdefault(step, {}).update(values)
        segment = self.segment_of()
        return [Reading(step=s, metrics=by_step[s], segment_id=segment) for s in order]

    def _parse(self, line: str) -> list[tuple[int, dict[str, float]]]:
        if self.rules is None:
            found = generic(line)
            out = [found] if found else []
        else:
            out = [r for rule in self.rules if (r := rule.match(line)) is not None and r[1]]
        if out:
            self.matched += 1
        return out
