"""What the dashboard shows, as plain JSON-able data computed from a ``TunerState``.

Pure functions of the folded state (and the run directory's path, for the images and
samples beside it): the overview, the lineage tree, the champion's effective schedule,
the curves, the trials table and the health panel. No I/O but ``Path.exists``; no aiohttp.

    tree = lineage(state)          # {"nodes": [...], "edges": [...], "champion_path": [...]}
    plan = schedule(state)         # the hyperparameters as step functions along the champion's path

Nothing secret leaves through here: the recorded config is shown only through
``redact``, which blanks alert URLs, CURVE secrets, storage URLs and credentials.
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...protocol import metrics as mt
from ...state.model import Segment, TunerState
from ...state.queries import eta_s, read_result, seconds_per_step, steps_spent

REDACTED = "***"
# keys whose values are secrets wherever they appear in a config or an event
_SECRET_KEY = re.compile(r"secret|password|passwd|token|credential|api_?key|webhook|(^|_)urls?$", re.I)
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)
# whole sections or keys that are secret by what they are
_SECRET_PATHS = {("alerts", "urls"), ("optuna_storage",), ("bus", "curve_server_secret"), ("bus", "allow_keys")}


def redact(value: Any, path: tuple[str, ...] = ()) -> Any:
    """``value`` with every secret blanked: the paths above, keys that name a secret, and the
    user:password part of any URL."""
    if path in _SECRET_PATHS or (path and _SECRET_KEY.search(path[-1]) and value not in (None, "", [], {})):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(v, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, path) for v in value]
    if isinstance(value, str):
        return _USERINFO.sub(lambda mm: mm.group("scheme") + REDACTED + "@", value)
    return value


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become None (the table shows a dash)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def budget_steps(state: TunerState) -> int | None:
    config = state.run.config if state.run else {}
    budget = config.get("budget") if isinstance(config, Mapping) else None
    steps = budget.get("max_steps") if isinstance(budget, Mapping) else None
    return steps if isinstance(steps, int) and steps > 0 else None


def _end(seg: Segment) -> int:
    if seg.end_step is not None:
        return seg.end_step
    if seg.last_step is not None:
        return seg.last_step
    return seg.start_step + seg.steps if seg.status == "finished" else seg.start_step


def _effective(seg: Segment) -> dict[str, Any]:
    return {**seg.hparams, **seg.applied}


def overview(state: TunerState, now: float | None = None) -> dict[str, Any]:
    """The header: run, phase, champion, budget spent and left, an ETA, counts."""
    now = time.time() if now is None else now
    run, c, t = state.run, state.control, state.tuning
    budget = budget_steps(state)
    spent = steps_spent(state)
    per_step = seconds_per_step(state)
    eta = eta_s(state, budget)
    champion = None
    if t.champion is not None:
        ch = t.champion
        champion = {
            "segment_id": ch.segment_id,
            "trial_id": ch.trial_id,
            "objective": finite(ch.objective),
            "step": ch.step,
            "promoted_seq": ch.promoted_seq,
            "hparams": dict(ch.hparams),
        }
    return {
        "run_id": run.run_id if run else None,
        "strategy": run.strategy if run else None,
        "seed": run.seed if run else None,
        "version": run.version if run else None,
        "config_hash": run.config_hash if run else None,
        "started_ts": run.started_ts if run else None,
        "phase": c.phase,
        "status": c.status,
        "finish_reason": c.finish_reason,
        "resumes": c.resumes,
        "last_seq": state.last_seq,
        "last_ts": state.last_ts,
        "global_step": state.progress.global_step,
        "steps_spent": spent,
        "budget_steps": budget,
        "seconds_per_step": per_step,
        "eta_s": eta,
        "eta_ts": now + eta if eta is not None else None,
        "champion": champion,
        "segments": len(t.segments),
        "segments_failed": sum(1 for s in t.segments.values() if s.status == "failed"),
        "trials": len(t.trials),
        "rounds": len(t.rounds),
        "promotions": t.promotions,
        "recent_decisions": [
            {"seq": d.seq, "ts": d.ts, "type": d.type, "reason": d.reason} for d in state.recent_decisions[-20:]
        ],
    }


def running(state: TunerState, at: Mapping[str, tuple[int, float | None]]) -> list[dict[str, Any]]:
    """The segments training now: how far each is (from the live feed's last report) and its loss."""
    out = []
    for seg in sorted(state.tuning.segments.values(), key=lambda s: s.scheduled_seq):
        if seg.status != "running":
            continue
        step, loss = at.get(seg.segment_id, (seg.start_step, None))
        out.append(
            {
                "segment_id": seg.segment_id,
                "trial_id": seg.trial_id,
                "done": max(0, step - seg.start_step),
                "steps": seg.steps,
                "train_loss": finite(loss),
            }
        )
    return out


def _parents(state: TunerState) -> dict[str, str | None]:
    """Each segment's parent: the segment whose checkpoint it started from (None: from scratch or
    from a checkpoint no segment of this run made)."""
    made = {s.checkpoint: s.segment_id for s in state.tuning.segments.values() if s.checkpoint}
    return {sid: made.get(s.from_checkpoint or "") for sid, s in state.tuning.segments.items()}


def champion_path(state: TunerState) -> list[str]:
    """The segments from the first to the champion's, along the checkpoints each started from."""
    champion = state.tuning.champion
    if champion is None:
        return []
    parents = _parents(state)
    path: list[str] = []
    seen: set[str] = set()
    node: str | None = champion.segment_id
    while node is not None and node not in seen and node in state.tuning.segments:
        seen.add(node)
        path.append(node)
        node = parents[node]
    return path[::-1]


def change(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters ``after`` sets differently from ``before``."""
    return {k: v for k, v in after.items() if before.get(k) != v}


def _label(changed: Mapping[str, Any]) -> str:
    if not changed:
        return "trains on"
    parts = []
    for k, v in changed.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


class _Images:
    """Which segments have images beside their checkpoints: one directory listing per folder, not
    a ``stat`` per segment (a long run has thousands)."""

    def __init__(self, run_dir: Path | None) -> None:
        self.root = run_dir.resolve() if run_dir is not None else None
        self._listed: dict[Path, set[str]] = {}

    def _names(self, folder: Path) -> set[str]:
        if folder not in self._listed:
            try:
                self._listed[folder] = {p.name for p in folder.iterdir()}
            except OSError:
                self._listed[folder] = set()
        return self._listed[folder]

    def of(self, seg: Segment, kind: str = "alignment") -> str | None:
        """The segment's alignment image (``kind="tts"``: its mels and gate), relative to the run
        directory, when the trainer wrote one there."""
        if self.root is None or not seg.checkpoint:
            return None
        png = Path(seg.checkpoint).with_suffix(f".{kind}.png")
        candidates = (
            [png] if png.is_absolute() else [Path.cwd() / png, self.root / "trainer" / "checkpoints" / png.name]
        )
        for candidate in candidates:
            if candidate.name in self._names(candidate.parent):
                try:
                    return str(candidate.resolve().relative_to(self.root))
                except ValueError:
                    return None
        return None


def lineage(state: TunerState, run_dir: Path | None = None) -> dict[str, Any]:
    """Nodes (segments: a checkpoint at a step) and edges (forks, trains-on, retries, exploits)
    labelled with the hyperparameter change; losers and pruned trials included, the champion's
    path marked."""
    t = state.tuning
    parents = _parents(state)
    path = champion_path(state)
    on_path = set(path)
    images = _Images(run_dir)
    rounds = {trial: r.round for r in t.rounds for trial in r.trials}
    winners = {r.winner for r in t.rounds if r.winner}
    # trials that lost a decided round (or were pruned): the grey of the tree
    lost = {trial for r in t.rounds if r.winner for trial in r.trials if trial != r.winner}
    lost |= {tid for tid, trial in t.trials.items() if trial.status == "pruned"}
    failed: dict[tuple[str | None, str | None], int] = {}  # (trial, start) -> the first failure's seq
    for seg in t.segments.values():
        if seg.status == "failed":
            key = (seg.trial_id, seg.from_checkpoint)
            failed[key] = min(failed.get(key, seg.scheduled_seq), seg.scheduled_seq)
    nodes, edges = [], []
    for sid, seg in sorted(t.segments.items(), key=lambda kv: kv[1].scheduled_seq):
        trial = t.trials.get(seg.trial_id or "")
        objective, diagonality = read_result(seg.metrics) if seg.metrics else (None, None)
        nodes.append(
            {
                "id": sid,
                "trial_id": seg.trial_id,
                "sampler": trial.sampler if trial else None,
                "trial_status": trial.status if trial else None,
                "round": rounds.get(seg.trial_id or ""),
                "winner": seg.trial_id in winners,
                "lost": seg.trial_id in lost and sid not in on_path,
                "status": seg.status,
                "start_step": seg.start_step,
                "end_step": _end(seg),
                "steps": seg.steps,
                "objective": finite(objective),
                "diagonality": finite(diagonality),
                "metrics": {k: finite(v) for k, v in seg.metrics.items()},
                "hparams": _effective(seg),
                "reason": seg.reason,
                "scheduled_seq": seg.scheduled_seq,
                "proposed_seq": trial.proposed_seq if trial else None,
                "failure": seg.failure,
                "duration_s": seg.duration_s,
                "champion_path": sid in on_path,
                "champion": t.champion is not None and t.champion.segment_id == sid,
                "alignment": images.of(seg),
                "tts": images.of(seg, "tts"),
            }
        )
        parent = parents[sid]
        if parent is None:
            continue
        before = t.segments[parent]
        changed = change(_effective(before), _effective(seg))
        if failed.get((seg.trial_id, seg.from_checkpoint), seg.scheduled_seq) < seg.scheduled_seq:
            kind = "rollback"  # a retry of a failed segment from the same checkpoint
        elif seg.trial_id == before.trial_id:
            kind = "trains-on"
        elif trial is not None and trial.sampler not in ("incumbent",) and changed:
            kind = "exploit" if state.run is not None and state.run.strategy == "pbt" else "fork"
        else:
            kind = "trains-on"
        edges.append(
            {
                "from": parent,
                "to": sid,
                "kind": kind,
                "label": _label(changed),
                "change": changed,
                "seq": seg.scheduled_seq,
                "champion_path": parent in on_path and sid in on_path,
            }
        )
    return {"nodes": nodes, "edges": edges, "champion_path": path}


def schedule(state: TunerState) -> dict[str, Any]:
    """The champion's effective hyperparameters as step functions: what it was trained with, from
    step 0 to its checkpoint (what people re-train with)."""
    path = [state.tuning.segments[s] for s in champion_path(state)]
    if not path:
        return {"segments": [], "initial": {}, "changes": []}
    spans: list[dict[str, Any]] = [
        {"segment_id": s.segment_id, "from_step": s.start_step, "to_step": _end(s), "hparams": _effective(s)}
        for s in path
    ]
    initial = dict(spans[0]["hparams"])
    changes: list[dict[str, Any]] = []
    current = dict(initial)
    for span in spans[1:]:
        changed = change(current, span["hparams"])
        if changed:
            changes.append({"at_step": span["from_step"], "segment_id": span["segment_id"], "set": changed})
            current.update(changed)
    params = sorted({k for s in spans for k in s["hparams"]})
    functions = {}
    for k in params:
        steps: list[dict[str, Any]] = []
        for span in spans:
            value = span["hparams"].get(k)
            if steps and steps[-1]["value"] == value:
                steps[-1]["to_step"] = span["to_step"]
            else:
                steps.append({"from_step": span["from_step"], "to_step": span["to_step"], "value": value})
        functions[k] = steps
    return {
        "champion": path[-1].segment_id,
        "final_step": _end(path[-1]),
        "segments": spans,
        "initial": initial,
        "changes": changes,
        "functions": functions,
    }


CURVE_METRICS = (
    mt.VAL_OBJECTIVE,
    mt.DIAGONALITY,
    mt.GATE_ACCURACY,
    mt.GRAD_NORM,
    mt.FR_GATE_STOP_RATE,
)


def curves(state: TunerState, train_last: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
    """Per finished segment the metrics at its end (x: its end step; the gradient norm from its last
    training report, in ``train_last``), its learning rate, and the champion's curve (each decided
    round's winner)."""
    points = []
    on_path = set(champion_path(state))
    for seg in sorted(state.tuning.segments.values(), key=lambda s: s.scheduled_seq):
        if seg.status != "finished" or not seg.metrics:
            continue
        hp = _effective(seg)
        row = {
            "segment_id": seg.segment_id,
            "trial_id": seg.trial_id,
            "step": _end(seg),
            "champion_path": seg.segment_id in on_path,
        }
        row.update({k: finite(seg.metrics.get(k)) for k in CURVE_METRICS})
        if row[mt.GRAD_NORM] is None and train_last is not None:
            row[mt.GRAD_NORM] = finite((train_last.get(seg.segment_id) or {}).get(mt.GRAD_NORM))
        row["learning_rate"] = finite(hp.get("learning_rate"))
        points.append(row)
    champion = [p for p in points if p["champion_path"]]
    return {"metrics": [*CURVE_METRICS, "learning_rate"], "points": points, "champion": champion}


def trials(state: TunerState) -> list[dict[str, Any]]:
    rows = []
    for trial in sorted(state.tuning.trials.values(), key=lambda t: t.number):
        rows.append(
            {
                "trial_id": trial.trial_id,
                "number": trial.number,
                "sampler": trial.sampler,
                "status": trial.status,
                "value": finite(trial.value),
                "pruned_step": trial.pruned_step,
                "proposed_seq": trial.proposed_seq,
                "hparams": trial.effective_hparams(),
            }
        )
    return rows


def trials_csv(state: TunerState) -> str:
    rows = trials(state)
    params = sorted({k for r in rows for k in r["hparams"]})
    out = io.StringIO()
    writer = csv.writer(out)
    fixed = ["trial_id", "number", "sampler", "status", "value", "pruned_step", "proposed_seq"]
    writer.writerow(fixed + params)
    for r in rows:
        writer.writerow([("" if r[k] is None else r[k]) for k in fixed] + [r["hparams"].get(p, "") for p in params])
    return out.getvalue()


def health(state: TunerState, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    h, t = state.health, state.tuning

    def incident(i: Any) -> dict[str, Any]:
        return {
            "seq": i.seq,
            "kind": i.kind,
            "subject": i.subject,
            "detail": i.detail,
            "gave_up": i.gave_up,
            "trial_id": i.trial_id,
        }

    return {
        "workers": [
            {
                "worker_id": w.worker_id,
                "pid": w.pid,
                "device": w.device,
                "status": w.status,
                "lost_reason": w.lost_reason,
            }
            for w in sorted(t.workers.values(), key=lambda w: w.worker_id)
        ],
        "guards": [incident(i) for i in h.guards],
        "rollbacks": [incident(i) for i in h.rollbacks],
        "crashes": [incident(i) for i in h.crashes],
        "alerts_sent": h.alerts_sent,
        "alerts_failed": h.alerts_failed,
        "refused_messages": h.protocol_violations,
        "last_event_age_s": (now - state.last_ts) if state.last_ts else None,
    }


def _samples_folder(run_dir: Path | None, recorded: str | None) -> Path | None:
    """The listening samples' folder inside the run directory. It is recorded relative to where
    the run was started (``runs/<id>/samples``), which need not be where the dashboard runs."""
    if run_dir is None or not recorded:
        return None
    root = run_dir.resolve()
    path = Path(recorded)
    for candidate in (path, Path.cwd() / path, root / path, root / path.name):
        try:
            resolved = candidate.resolve()
            if resolved.is_dir() and resolved.is_relative_to(root):
                return resolved
        except OSError:
            continue
    return None


def tts(state: TunerState, run_dir: Path | None) -> dict[str, Any]:
    """The listening panel: champions' tests on the test sentences (metrics and samples), and the
    alignment filmstrip along the champion's path."""
    tests = []
    for test in state.tuning.tests:
        samples: list[dict[str, str]] = []
        folder = _samples_folder(run_dir, test.samples)
        if run_dir is not None and folder is not None:
            rel = folder.relative_to(run_dir.resolve())
            samples = [
                {"name": p.name, "path": str(rel / p.name)}
                for p in sorted(folder.glob("*"))
                if p.suffix.lower() in (".wav", ".png")
            ]
        tests.append(
            {
                "seq": test.seq,
                "segment_id": test.segment_id,
                "step": test.step,
                "test_set": test.test_set,
                "n_sentences": test.n_sentences,
                "metrics": {k: finite(v) for k, v in test.metrics.items()},
                "final": test.final,
                "error": test.error,
                "samples": samples,
            }
        )
    film = []
    images = _Images(run_dir)
    for sid in champion_path(state):
        seg = state.tuning.segments[sid]
        film.append(
            {
                "segment_id": sid,
                "step": _end(seg),
                "alignment": images.of(seg),
                "tts": images.of(seg, "tts"),
            }
        )
    return {"tests": tests, "filmstrip": film}
