"""Human-readable lines for events: what ``tail``, ``status`` and ``replay --timeline`` print.

``describe(env)`` is one line: time, seq, actor, type and the gist (for a
decision, its reason). ``to_json(env)`` is the machine form (non-finite floats
become the strings "NaN", "Infinity", "-Infinity", so every line is valid JSON).
Pure: imports the standard library and ``protocol`` only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

from ..protocol import Envelope, to_data
from ..protocol import messages as m


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _metrics(metrics: Mapping[str, float], limit: int = 6) -> str:
    items = list(metrics.items())
    shown = " ".join(f"{k}={_num(v)}" for k, v in items[:limit])
    return shown + (f" (+{len(items) - limit})" if len(items) > limit else "")


_TEST_SHOWN = ("val_objective", "diagonality", "fr_gate_stop_rate", "fr_length_ratio", "fr_mcd_dtw")


def gist(env: Envelope) -> str:
    """The essence of one event, without time or seq."""
    e = env.data
    match e:
        case m.RunStarted():
            return f"run {e.run_id} started: strategy={e.strategy} seed={e.seed} config={e.config_hash[:12]}"
        case m.RunResumed():
            torn = f", cut {e.truncated_bytes} torn bytes" if e.truncated_bytes else ""
            return f"run {e.run_id} resumed at seq {e.head_seq} by pid {e.pid}{torn}"
        case m.RunFinished():
            return f"run finished: {e.status} - {e.reason}"
        case m.StopRequested():
            return f"stop requested by {e.source}: {e.reason}"
        case m.MetricsObserved():
            return f"step {e.step} [{e.source}{' ' + e.segment_id if e.segment_id else ''}] {_metrics(e.metrics)}"
        case m.SegmentScheduled():
            return f"{e.segment_id}: {e.steps} steps from step {e.start_step} - {e.reason}"
        case m.SegmentStarted():
            return f"{e.segment_id} started on {e.device} by {e.worker_id} (attempt {e.attempt})"
        case m.SegmentFinished():
            return f"{e.segment_id} finished at step {e.end_step} in {e.duration_s:.1f}s: {_metrics(e.metrics)}"
        case m.SegmentFailed():
            return f"{e.segment_id} failed ({e.reason}) at step {e.step}: {e.detail}"
        case m.ActorCrashed():
            return f"actor {e.actor} crashed ({e.error}); restarts={e.restarts}{' - gave up' if e.gave_up else ''}"
        case m.AlertSent():
            return f"alert [{e.severity}] via {e.channel}: {e.title}{'' if e.ok else ' - FAILED: ' + str(e.error)}"
        case m.ActorReady():
            return f"actor {e.actor} ready"
        case m.WorkerHello() if e.environment:
            info = e.environment
            audio = f", audio {str(info['audio_sha256'])[:12]}" if info.get("audio_sha256") else ""
            return (
                f"worker_id={e.worker_id} pid={e.pid} device={e.device} | torch {info.get('torch')}, "
                f"{info.get('threads')} threads, {info.get('cpu')}, data {info.get('dataset_id')}{audio}"
            )
        case m.ChampionTested():
            what = "final, with listening samples" if e.samples else ("final" if e.final else "new champion")
            if e.error is not None:
                return f"{e.segment_id} (step {e.step}) not measured on the test set ({what}): {e.error}"
            return (
                f"{e.segment_id} (step {e.step}) on the test set ({e.test_set}, {e.n_sentences} sentences; {what}): "
                + _metrics({k: v for k, v in e.metrics.items() if k in _TEST_SHOWN})
            )
        case m.ProtocolViolation():
            return f"{e.count} malformed message(s) refused at {e.where}, e.g. {e.error}"
    if e.DECISION:
        return f"{e.reason}"  # type: ignore[attr-defined]
    fields = to_data(e)
    return " ".join(f"{k}={_num(v)}" for k, v in fields.items() if not isinstance(v, (Mapping, tuple)))


def describe(env: Envelope) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(env.ts))
    return f"{stamp} #{env.seq:<6} {env.actor:<12} {env.type:<18} {gist(env)}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def to_json(env: Envelope) -> str:
    doc = {
        "seq": env.seq,
        "id": env.id,
        "ts": env.ts,
        "type": env.type,
        "tv": env.tv,
        "actor": env.actor,
        "corr": env.corr,
        "cause": env.cause,
        "data": _jsonable(to_data(env.data)),
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def is_timeline_event(env: Envelope) -> bool:
    """Decisions and lifecycle facts: what a post-mortem timeline shows (no metric stream)."""
    return env.data.DECISION or not isinstance(env.data, (m.MetricsObserved, m.ActorReady))
