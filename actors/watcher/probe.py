"""``run_tuner.py probe TARGET``: what Smart Tuner can read from a training's logs, before it tunes it.

    python run_tuner.py probe runs/my-tacotron/logs          # a TensorBoard log directory
    python run_tuner.py probe train.out                      # a console log
    python run_tuner.py probe sqlite:////abs/mlflow.db --experiment tts
    python run_tuner.py probe http://mlflow:5000 --run RUN_ID

Reads everything the target holds (nothing is written), says which preset matched and
how confidently (``presets.detect``), lists every canonical metric found with its latest
step and value and the name it was logged under, and what could not be mapped. Exits 0
when at least one canonical metric was found, 1 when none was (the tuner would see
nothing), 2 when the target cannot be read.

Imports the standard library, the sources and the presets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .console_source import STDOUT_RULES, StdoutSource
from .layouts import LAYOUTS, Match, detect
from .tensorboard_source import PATTERN, TensorBoardSource


class ProbeError(Exception):
    """The target cannot be read (the message says why)."""


@dataclass
class Findings:
    kind: str  # tensorboard, stdout, mlflow
    where: str
    matches: list[Match]
    preset: str
    x_axis: str
    latest: dict[str, tuple[int, float, str]] = field(default_factory=dict)  # name -> (step, value, logged as)
    unmapped: Counter[str] = field(default_factory=Counter)
    detail: str = ""


def probe_target(
    target: str, *, run_id: str | None = None, experiment: str | None = None, preset: str | None = None
) -> Findings:
    if preset is not None and preset not in LAYOUTS:
        raise ProbeError(f"unknown preset {preset!r}; known: {', '.join(LAYOUTS)}")
    if "://" in target or target.startswith("sqlite:"):
        return _mlflow(target, run_id, experiment)
    path = Path(target)
    if path.is_dir():
        return _tensorboard(path, preset)
    if path.is_file():
        if path.name.startswith("events.out.tfevents."):
            return _tensorboard(path.parent, preset)
        return _stdout(path)
    raise ProbeError(f"{target}: no such directory, file or tracking URI")


def _tensorboard(logdir: Path, preset: str | None) -> Findings:
    files = sorted(logdir.rglob(PATTERN))
    if not files:
        raise ProbeError(f"{logdir}: no TensorBoard event files ({PATTERN}) under it")
    seen: set[tuple[str, str]] = set()

    def record(tag: str, directory: str) -> str | None:
        seen.add((directory, tag))
        return None

    scan = TensorBoardSource(logdir, mapping=record)
    scan.read()
    matches = detect(seen)
    chosen = LAYOUTS[preset] if preset else (matches[0].preset if matches else LAYOUTS["generic"])
    logged_as: dict[str, str] = {}

    def mapping(tag: str, directory: str) -> str | None:
        name = chosen.name_of(tag, directory)
        if name is not None:
            logged_as[name] = f"{directory}/{tag}" if directory else tag
        return name

    source = TensorBoardSource(logdir, mapping=mapping)
    source.read()
    found = Findings("tensorboard", f"{logdir} ({len(files)} event files)", matches, chosen.name, chosen.x_axis)
    found.latest = {n: (step, value, logged_as.get(n, "?")) for n, (step, value) in source.latest.items()}
    found.unmapped = Counter({f"{d}/{t}" if d else t: c for (d, t), c in source.unmapped.items()})
    return found


def _stdout(path: Path) -> Findings:
    best: tuple[int, str, StdoutSource] | None = None
    for name, rules in (("nvidia_tacotron2", STDOUT_RULES["nvidia_tacotron2"]), ("generic", None)):
        source = StdoutSource(path, rules)
        readings = source.read()
        if best is None or source.matched > best[0]:
            best = (source.matched, name, source)
            latest: dict[str, tuple[int, float, str]] = {}
            for r in readings:
                for k, v in r.metrics.items():
                    latest[k] = (r.step, v, "stdout")
    assert best is not None
    matched, name, source = best
    found = Findings("stdout", str(path), [], name, "iteration", detail=f"{matched} of {source.lines} lines matched")
    found.latest = latest if matched else {}
    return found


def _mlflow(uri: str, run_id: str | None, experiment: str | None) -> Findings:
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    from .mlflow_source import MlflowSource

    try:
        client = MlflowClient(tracking_uri=uri)
        if run_id is None and experiment is None:
            exps = [e.experiment_id for e in client.search_experiments()]
            newest = client.search_runs(exps, order_by=["attributes.start_time DESC"], max_results=1) if exps else []
            if not newest:
                raise ProbeError(f"{uri}: no runs in this tracking store")
            run_id = newest[0].info.run_id
        source = MlflowSource(uri, run_id=run_id) if run_id else MlflowSource(uri, experiment=experiment)
        source.read()
        keys: set[tuple[str, str]] = {("", k) for k in source.unmapped} | {("", k) for k in _keys(source)}
    except ProbeError:
        raise
    except Exception as exc:  # an unreachable server, a missing run: say which
        raise ProbeError(f"{uri}: {exc}") from None
    matches = detect(keys)
    where = f"{uri} (run {run_id})" if run_id else f"{uri} (experiment {experiment!r}, newest run)"
    found = Findings("mlflow", where, matches, "mlflow keys", "step")
    found.latest = {n: (s, v, n) for n, (s, v) in source.latest.items()}
    found.unmapped = Counter(source.unmapped)
    return found


def _keys(source: Any) -> list[str]:
    return [k for (_, k) in source.seen]


def render(found: Findings) -> str:
    lines = [f"source      {found.kind}  {found.where}"]
    others = ", ".join(f"{m.preset.name} {m.confidence:.2f}" for m in found.matches[1:4])
    best = next((m for m in found.matches if m.preset.name == found.preset), None)
    conf = f"  confidence {best.confidence:.2f}" if best else ""
    lines.append(
        f"preset      {found.preset}{conf}  (x-axis: {found.x_axis})" + (f"  [also: {others}]" if others else "")
    )
    if found.detail:
        lines.append(f"lines       {found.detail}")
    if found.latest:
        lines.append(f"{'metric':<24} {'latest step':>11}  {'value':>12}  logged as")
        for name, (step, value, tag) in sorted(found.latest.items()):
            lines.append(f"{name:<24} {step:>11}  {value:>12.6g}  {tag}")
    else:
        lines.append("metrics     none Smart Tuner can use")
    if found.unmapped:
        lines.append(
            f"not mapped  {len(found.unmapped)}: "
            + ", ".join(f"{k} ({n} values)" for k, n in sorted(found.unmapped.items()))
        )
    return "\n".join(lines)


def probe(target: str, *, run_id: str | None = None, experiment: str | None = None, preset: str | None = None) -> int:
    """Show which preset a training's logs match, every metric Smart Tuner found in them, and what it could not map.

    TARGET: a TensorBoard log directory (or one event file), a console log file, or an MLflow
    tracking URI (sqlite:///..., http://...) with --run or --experiment (default: the newest run)."""
    found = probe_target(target, run_id=run_id, experiment=experiment, preset=preset)
    print(render(found))
    return 0 if found.latest else 1
