"""Guard rails: TTS training pathologies recognised from the metrics, each a decision with evidence.

    GuardRails()     # an actor core; folds its own MetricStore from the log

Consumes: ``MetricsObserved`` (train-time telemetry), ``SegmentFinished`` (validation),
``SegmentFailed`` (NaN, out-of-memory), ``SegmentScheduled`` (the hyperparameters in force).
Emits: ``GuardTripped`` (guard, evidence, action, and the hyperparameter changes that
every later segment gets: ``hparams``) and ``RollbackPerformed`` (the failed segment is
re-run from its starting checkpoint with safer hyperparameters).

| guard | seen as | action |
|---|---|---|
| ``nan`` | the worker stopped on a NaN/Inf loss or gradient | roll back, halve the lr; under its floor: give up |
| ``oom`` | the worker ran out of memory | roll back, halve the batch, lr x sqrt(1/2); at batch 1: give up |
| ``loss_spike`` | train loss >= 3x the median of the reports before | halve ``grad_clip_thresh`` |
| ``grad_explode`` | grad norm > 100 and > 10x the lineage's median in 3 reports in a row | halve ``grad_clip_thresh`` |
| ``grad_vanish`` | grad norm < 1e-6 in 3 reports in a row | recorded (nothing to undo) |
| ``attention`` | diagonality < 0.5 and not rising, after the alignment phase | double ``guided_attn_weight`` |
| ``gate`` | gate accuracy < 0.8 after the alignment phase | double ``gate_pos_weight`` |
| ``divergence`` | val objective up >= 5% while train objective fell | weight decay x 10 |

Every number is a setting of the ``guards:`` section (``state/config/schema.py:GuardsConfig``,
read from the config the run recorded); the table gives the defaults. The alignment phase lasts
``alignment_steps`` or a fifth of the step budget, whichever is longer (a large model aligns
later), and attention whose diagonality rose by ``aligning_rise`` since the lineage's validation
before is left to align. A gradient norm counts as exploding only above ``grad_explode_factor``
times the lineage's own earlier median too (the segment it trained from and its own earlier
reports; a large model's norms run high), so not before there is a history to compare with. Each guard trips at
most once per segment (and the validation guards at most once per ``cooldown_steps``), so a
persistent condition cannot flood the log. Rules read only committed metrics and
hyperparameters, so ``replay`` reproduces every trip.

Every correction is bounded: a change stays within the range the trainer announced for the
parameter (and the caps below), and a guard corrects the lineage at most ``max_tries``
times. When it has nothing left (its tries spent, the next value out of range, an OOM at
batch size 1) it records a last trip with ``gives_up`` and the stop controller ends the run
naming it: a parameter is never pushed out of range, and a run never waits forever.

Only the lineage's own trouble changes the lineage (``scope``): a trip during a fork
challenger's probe is recorded with its evidence and changes nothing (the race judges the
probe); a PBT member or a trial racing from scratch is a lineage of its own, which every guard
watches, the validation guards included: its corrections (``GuardTripped.trial_id``) change that
trial's later segments alone, with its own tries, and once it has none left the race judges it.
A NaN or an OOM re-runs the failed segment itself either way; the smaller batch of an OOM
outside the lineage is that trial's alone.

Imports the standard library, ``protocol``, ``state`` and the actors package only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..protocol import Envelope, Message
from ..protocol import messages as m
from ..protocol import metrics as mx
from ..state.config import GuardsConfig
from ..state.model import Segment, TunerState
from ..state.queries import announced_hparams
from .runtime import ActorCore, Out
from .store.metric_store import MetricStore

CAPS = {"guided_attn_weight": 50.0, "gate_pos_weight": 50.0, "weight_decay": 1e-2}  # over any announced high
FLOORS = {"grad_clip_thresh": 1e-4}  # under any announced low
INCUMBENT = "incumbent"  # the sampler name of the lineage's own trials (actors/tuner/engine.py)


class GuardRails(ActorCore):
    name = "guards"
    replays_history = True

    def __init__(self) -> None:
        self.store = MetricStore()
        self._settings: tuple[str, GuardsConfig] | None = None
        # per (guard, trial: None for the run's lineage), the trips that changed hyperparameters (from seq 1)
        self.corrections: dict[tuple[str, str | None], int] = {}

    def observe(self, env: Envelope) -> None:
        self.store.observe(env)
        if isinstance(env.data, m.GuardTripped) and env.data.hparams:
            key = (env.data.guard, env.data.trial_id)
            self.corrections[key] = self.corrections.get(key, 0) + 1

    def react(self, env: Envelope, state: TunerState) -> Sequence[Out]:
        msg = env.data
        if state.control.phase != "running":
            return ()
        if isinstance(msg, m.SegmentFailed) and msg.reason in ("nan", "oom"):
            seg = state.tuning.segments[msg.segment_id]
            found = _settable(state, self._failure(state, msg))
            if scope(state, seg) != LINEAGE:  # a probe's or a member's batch, or giving up, is its own
                found = [_for_trial(x, seg, always=True) for x in found]
            return [Out(x) for x in found]
        if isinstance(msg, m.SegmentFinished | m.MetricsObserved) and msg.segment_id not in state.tuning.segments:
            return ()
        if (
            isinstance(msg, m.MetricsObserved)
            and msg.segment_id is not None
            and msg.segment_id in state.tuning.segments
        ):
            seg = state.tuning.segments[msg.segment_id]
            return [Out(x) for x in self._bounded(state, seg, _settable(state, self._telemetry(state, seg, msg)))]
        if isinstance(msg, m.SegmentFinished):
            seg = state.tuning.segments[msg.segment_id]
            return [Out(x) for x in self._bounded(state, seg, _settable(state, self._validation(state, seg)))]
        return ()

    def resume(self, state: TunerState) -> Sequence[Out]:
        """A failure that the last run saw but never rolled back is rolled back now."""
        out: list[Message] = []
        for seg in state.tuning.segments.values():
            if seg.status == "failed" and seg.failure in ("nan", "oom") and seg.rollback is None:
                reason: m.FailureReason = "nan" if seg.failure == "nan" else "oom"
                failed = m.SegmentFailed(
                    segment_id=seg.segment_id, reason=reason, detail=seg.failure_detail or "", step=seg.last_step
                )
                out += self._failure(state, failed)
        return [Out(x) for x in _settable(state, out)]

    # --- failures: roll back -------------------------------------------------------------

    def _failure(self, state: TunerState, e: m.SegmentFailed) -> list[Message]:
        seg = state.tuning.segments[e.segment_id]
        hp = _in_force(state, seg)
        lr = float(hp.get("learning_rate", 1e-3))
        loss = self.store.metric(seg.segment_id, mx.TRAIN_LOSS).last_finite
        evidence: dict[str, Any] = {
            "failure": e.reason,
            "detail": e.detail[:500],
            "step": e.step,
            "learning_rate": lr,
            "last_finite_train_loss": loss,
        }
        if e.reason == "nan":
            spec = (announced_hparams(state) or {}).get("learning_rate")
            low = spec.get("low") if isinstance(spec, Mapping) else None
            if isinstance(low, int | float) and lr * 0.5 < low:
                action = f"nothing left to halve (learning rate {lr:.3g}, the trainer's floor {low:g}): the run stops"
                trip = self._trip("nan", seg, e.step, action, f"nan in {seg.segment_id}: {e.detail[:200]}", evidence)
                return [dataclasses.replace(trip, gives_up=True)]
            change: dict[str, Any] = {"learning_rate": lr * 0.5}
            action = f"roll back to step {seg.start_step} and halve the learning rate ({lr:.3g} -> {lr * 0.5:.3g})"
            lasting: dict[str, Any] = {}
        else:
            batch = int(hp.get("batch_size", 16))
            if batch <= 1:
                action = "nothing left to halve (batch size 1): the run stops"
                trip = self._trip("oom", seg, e.step, action, f"out of memory at batch size {batch}", evidence)
                return [dataclasses.replace(trip, gives_up=True)]
            change = {"batch_size": batch // 2, "learning_rate": lr * math.sqrt((batch // 2) / batch)}
            action = f"roll back to step {seg.start_step}, batch {batch} -> {batch // 2}, lr x sqrt(1/2)"
            lasting = {"batch_size": batch // 2}
        trip = self._trip(
            e.reason, seg, e.step, action, f"{e.reason} in {seg.segment_id}: {e.detail[:200]}", evidence, lasting
        )
        rollback = m.RollbackPerformed(
            to_checkpoint=seg.from_checkpoint or "(initial weights)",
            to_sha256=seg.from_sha256 or "",
            to_step=seg.start_step,
            hparams=change,
            segment_id=seg.segment_id,
            reason=f"{e.reason} at step {e.step}: re-run {seg.segment_id} from step {seg.start_step} with {change}",
            evidence=evidence,
        )
        return [trip, rollback]

    # --- while training ----------------------------------------------------------------------

    def _telemetry(self, state: TunerState, seg: Segment, e: m.MetricsObserved) -> list[Message]:
        g = self.settings(state)
        if e.step < g.min_steps or mx.VAL_OBJECTIVE in e.metrics:
            return []
        tripped = self._tripped(state, seg.segment_id)
        hp = _in_force(state, seg)
        clip = float(hp.get("grad_clip_thresh", 1.0))
        out: list[Message] = []
        loss = self.store.metric(seg.segment_id, mx.TRAIN_LOSS)
        ratio = loss.spike(g.spike_factor, g.spike_window)
        if ratio is not None and "loss_spike" not in tripped:
            out.append(
                self._trip(
                    "loss_spike",
                    seg,
                    e.step,
                    f"halve grad_clip_thresh ({clip:g} -> {clip / 2:g})",
                    f"train loss {loss.last:.4g} is {ratio:.1f}x the median of the {g.spike_window} reports before it",
                    {"ratio": ratio, mx.TRAIN_LOSS: loss.last, "median": loss.median(g.spike_window + 1)},
                    {"grad_clip_thresh": clip / 2},
                )
            )
        series = self.store.metric(seg.segment_id, mx.GRAD_NORM)
        grads = [v for _, v in series.finite(g.grad_reports)]
        # the lineage's own history: the segment it trained from, then this one's earlier reports
        parent = _parent(state, seg)
        history = [v for _, v in self.store.metric(parent.segment_id, mx.GRAD_NORM).finite()] if parent else []
        history += [v for _, v in series.finite()][: -g.grad_reports]
        usual = sorted(history)[len(history) // 2] if history else 0.0
        limit = max(g.grad_explode_norm, g.grad_explode_factor * usual)
        judged = len(history) >= g.grad_reports  # no history yet: nothing to compare with
        if judged and len(grads) == g.grad_reports and "grad_explode" not in tripped and min(grads) > limit:
            out.append(
                self._trip(
                    "grad_explode",
                    seg,
                    e.step,
                    f"halve grad_clip_thresh ({clip:g} -> {clip / 2:g})",
                    f"gradient norm above {limit:g} in {g.grad_reports} reports in a row",
                    {"grad_norms": grads, "limit": limit, "earlier_median": usual},
                    {"grad_clip_thresh": clip / 2},
                )
            )
        if len(grads) == g.grad_reports and "grad_vanish" not in tripped and max(grads) < g.grad_vanish_norm:
            out.append(
                self._trip(
                    "grad_vanish",
                    seg,
                    e.step,
                    "recorded: the lineage's next decision sees it",
                    f"gradient norm below {g.grad_vanish_norm:g} in {g.grad_reports} reports in a row",
                    {"grad_norms": grads},
                )
            )
        return out

    # --- after validation ----------------------------------------------------------------------

    def _validation(self, state: TunerState, seg: Segment) -> list[Message]:
        step = seg.end_step or 0
        g = self.settings(state)
        if step < alignment_phase_steps(state, g) or scope(state, seg) == PROBE:
            return []  # a fork challenger's validation is the race's business
        hp = _in_force(state, seg)
        met = seg.metrics
        out: list[Message] = []
        diag = met.get(mx.DIAGONALITY)
        before = _parent(state, seg)
        earlier = before.metrics.get(mx.DIAGONALITY, 1.0) if before is not None else 1.0
        rising = diag is not None and diag - earlier >= g.aligning_rise
        if diag is not None and diag < g.min_diagonality and not rising and self._cool(state, "attention", step, seg):
            w = float(hp.get("guided_attn_weight", 1.0))
            new = max(w * 2, 0.5)
            out.append(
                self._trip(
                    "attention",
                    seg,
                    step,
                    f"raise guided_attn_weight {w:g} -> {new:g}",
                    f"attention diagonality {diag:.2f} < {g.min_diagonality} after step {step}",
                    {mx.DIAGONALITY: diag, mx.FOCUS_RATE: met.get(mx.FOCUS_RATE)},
                    {"guided_attn_weight": new},
                )
            )
        acc = met.get(mx.GATE_ACCURACY)
        if acc is not None and acc < g.min_gate_accuracy and self._cool(state, "gate", step, seg):
            pw = float(hp.get("gate_pos_weight", 1.0))
            out.append(
                self._trip(
                    "gate",
                    seg,
                    step,
                    f"raise gate_pos_weight {pw:g} -> {pw * 2:g}",
                    f"gate accuracy {acc:.2f} < {g.min_gate_accuracy} after step {step}",
                    {mx.GATE_ACCURACY: acc, mx.VAL_GATE_LOSS: met.get(mx.VAL_GATE_LOSS)},
                    {"gate_pos_weight": pw * 2},
                )
            )
        out += self._divergence(state, seg, hp)
        return out

    def _divergence(self, state: TunerState, seg: Segment, hp: Mapping[str, Any]) -> list[Message]:
        parent = _parent(state, seg)
        if parent is None or not self._cool(state, "divergence", seg.end_step or 0, seg):
            return []
        val0, val1 = parent.metrics.get(mx.VAL_OBJECTIVE), seg.metrics.get(mx.VAL_OBJECTIVE)
        tr0 = self.store.metric(parent.segment_id, mx.TRAIN_OBJECTIVE).median(3)
        tr1 = self.store.metric(seg.segment_id, mx.TRAIN_OBJECTIVE).median(3)
        if None in (val0, val1, tr0, tr1):
            return []
        assert val0 is not None and val1 is not None and tr0 is not None and tr1 is not None
        if not (val1 > val0 * (1 + self.settings(state).divergence) and tr1 < tr0):
            return []
        wd = float(hp.get("weight_decay", 1e-6))
        new = min(max(wd * 10, 1e-6), 1e-2)
        return [
            self._trip(
                "divergence",
                seg,
                seg.end_step,
                f"more regularisation: weight_decay {wd:g} -> {new:g}",
                f"val objective rose {val0:.4f} -> {val1:.4f} while train objective fell {tr0:.4f} -> {tr1:.4f}",
                {"val": [val0, val1], "train": [tr0, tr1]},
                {"weight_decay": new},
            )
        ]

    def settings(self, state: TunerState) -> GuardsConfig:
        """The run's ``guards:`` section as recorded (a log older than the section: the defaults)."""
        run_id = state.run.run_id if state.run is not None else ""
        if self._settings is None or self._settings[0] != run_id:
            raw = state.run.config.get("guards") if state.run is not None else None
            self._settings = (run_id, GuardsConfig.model_validate(raw or {}))
        return self._settings[1]

    # --- bounds ----------------------------------------------------------------------------

    def _bounded(self, state: TunerState, seg: Segment, found: Sequence[Message]) -> list[Message]:
        """Each trip's change checked against its bounds and the guard's tries. A fork challenger's
        trip changes nothing (the race judges the probe); a PBT member's or a trial's changes that
        trial alone, and when it has none left the race judges it too. The lineage's trip with no
        correction left gives up (the stop controller ends the run)."""
        out: list[Message] = []
        whose = scope(state, seg)
        trial = seg.trial_id if whose == TRIAL else None
        for msg in found:
            if not isinstance(msg, m.GuardTripped) or not msg.hparams:
                out.append(msg)
            elif whose == PROBE:
                note = f"recorded for the probe only ({msg.action} not applied: a challenger's trouble is the race's)"
                out.append(dataclasses.replace(msg, hparams={}, action=note))
            elif (why := self._exhausted(state, msg, trial)) is not None:
                evidence = {**msg.evidence, "asked": dict(msg.hparams), "tries": self._tries(msg.guard, trial)}
                if trial is None:
                    action = f"no correction left ({why}): the run stops"
                    out.append(dataclasses.replace(msg, hparams={}, action=action, evidence=evidence, gives_up=True))
                else:
                    action = f"no correction left for {trial} ({why}): the race judges it"
                    out.append(dataclasses.replace(msg, hparams={}, action=action, evidence=evidence))
            else:
                out.append(msg if trial is None else _for_trial(msg, seg))
        return out

    def _exhausted(self, state: TunerState, trip: m.GuardTripped, trial: str | None = None) -> str | None:
        tries = self._tries(trip.guard, trial)
        if tries >= self.settings(state).max_tries:
            whom = "the lineage" if trial is None else trial
            return f"{trip.guard} has corrected {whom} {tries} times already"
        announced = announced_hparams(state) or {}
        for name, value in trip.hparams.items():
            spec = announced.get(name)
            spec = spec if isinstance(spec, Mapping) else {}
            lows = [x for x in (spec.get("low"), FLOORS.get(name)) if isinstance(x, int | float)]
            highs = [x for x in (spec.get("high"), CAPS.get(name)) if isinstance(x, int | float)]
            low, high = (max(lows) if lows else None), (min(highs) if highs else None)
            if not isinstance(value, int | float):
                continue
            if low is not None and value < low:
                return f"{name} {value:g} would be under its floor {low:g}"
            if high is not None and value > high:
                return f"{name} {value:g} would be over its cap {high:g}"
        return None

    def _tries(self, guard: str, trial: str | None = None) -> int:
        """Corrections ``guard`` has made to the lineage (``trial`` None) or to one trial."""
        return self.corrections.get((guard, trial), 0)

    # --- helpers ---------------------------------------------------------------------------

    def _tripped(self, state: TunerState, segment_id: str) -> set[str]:
        return {g.kind for g in state.health.guards if g.subject == segment_id}

    def _cool(self, state: TunerState, guard: str, step: int, at: Segment) -> bool:
        """No trip of ``guard`` within ``cooldown_steps`` before ``step`` on ``at``'s own line (the
        lineage's segments, or one trial's)."""
        cooldown = self.settings(state).cooldown_steps
        own = at.trial_id if scope(state, at) == TRIAL else None
        for g in state.health.guards:
            if g.kind == guard:
                seg = state.tuning.segments.get(g.subject)
                if seg is None or (own is not None and seg.trial_id != own):
                    continue
                if own is None and scope(state, seg) == TRIAL:
                    continue  # a member's trouble does not hold back the lineage's guard
                if step - (seg.end_step or seg.start_step) < cooldown:
                    return False
        return True

    def _trip(
        self,
        guard: str,
        seg: Segment,
        step: int | None,
        action: str,
        reason: str,
        evidence: Mapping[str, Any],
        hparams: Mapping[str, Any] | None = None,
    ) -> m.GuardTripped:
        return m.GuardTripped(
            guard=guard,
            segment_id=seg.segment_id,
            step=step,
            action=action,
            reason=reason,
            evidence=_finite(evidence),
            hparams=dict(hparams or {}),
        )


def alignment_phase_steps(state: TunerState, g: GuardsConfig) -> int:
    """Global steps by which attention should be diagonal: ``alignment_steps``, or a share of the
    step budget when that is later."""
    budget = (state.run.config.get("budget") or {}).get("max_steps") if state.run is not None else None
    share = int(budget * g.alignment_budget_share) if isinstance(budget, int) else 0
    return max(g.alignment_steps, share)


LINEAGE, TRIAL, PROBE = "lineage", "trial", "probe"


def scope(state: TunerState, seg: Segment) -> str:
    """Whose trouble a segment's is.

    * ``lineage``: the champion's own line (a round of one trial, forks' incumbent, a segment
      outside any trial): a correction is the run's, for every later segment;
    * ``trial``: a member of a PBT generation or a trial of a race from scratch (``pbt``,
      ``trials``): a lineage of its own, whose corrections are its own;
    * ``probe``: a fork challenger, racing the incumbent from the champion's checkpoint: recorded,
      the race judges it."""
    trial = state.tuning.trials.get(seg.trial_id or "")
    if trial is None:
        return LINEAGE
    rnd = next((r for r in reversed(state.tuning.rounds) if trial.trial_id in r.trials), None)
    if rnd is not None and len(rnd.trials) == 1:
        return LINEAGE
    strategy = state.run.strategy if state.run is not None else "forks"
    if rnd is not None and strategy in ("pbt", "trials"):
        return TRIAL
    return LINEAGE if trial.sampler == INCUMBENT else PROBE


def _for_trial(msg: Message, seg: Segment, always: bool = False) -> Message:
    """A trip's lasting change scoped to ``seg``'s trial (a rollback re-runs that segment anyway);
    ``always``: a trip without a change too (a NaN or OOM with nothing left gives up on the trial,
    and the round engine prunes it, instead of ending the run)."""
    if isinstance(msg, m.GuardTripped) and (msg.hparams or always):
        return dataclasses.replace(msg, trial_id=seg.trial_id)
    return msg


def _parent(state: TunerState, seg: Segment) -> Segment | None:
    """The finished segment whose checkpoint ``seg`` trained from."""
    return next(
        (s for s in state.tuning.segments.values() if s.checkpoint and s.checkpoint == seg.from_checkpoint), None
    )


def _settable(state: TunerState, found: Sequence[Message]) -> list[Message]:
    """The guards' changes cut to what the trainer announced: a user's script (external mode)
    may have no ``guided_attn_weight``; asking it for one would fail every later segment."""
    announced = announced_hparams(state)
    if announced is None:
        return list(found)
    out: list[Message] = []
    for msg in found:
        if isinstance(msg, m.GuardTripped | m.RollbackPerformed) and set(msg.hparams) - set(announced):
            kept = {k: v for k, v in msg.hparams.items() if k in announced}
            missing = ", ".join(sorted(set(msg.hparams) - set(kept)))
            if isinstance(msg, m.GuardTripped):
                note = f"{msg.action} (not applied: the trainer has no {missing})"
                out.append(dataclasses.replace(msg, hparams=kept, action=note))
            else:
                note = f"{msg.reason} (the trainer has no {missing})"
                out.append(dataclasses.replace(msg, hparams=kept, reason=note))
        else:
            out.append(msg)
    return out


def _in_force(state: TunerState, seg: Segment) -> dict[str, Any]:
    """The hyperparameters a segment trains with: the worker's defaults, then what it was given."""
    announced = announced_hparams(state) or {}
    defaults = {k: v.get("default") for k, v in announced.items() if isinstance(v, Mapping)}
    return {**defaults, **seg.hparams}


def _finite(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """Evidence as recorded: non-finite floats become strings ("nan"), which every reader can show."""
    out: dict[str, Any] = {}
    for k, v in evidence.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = str(v)
        elif isinstance(v, list):
            out[k] = [str(x) if isinstance(x, float) and not math.isfinite(x) else x for x in v]
        else:
            out[k] = v
    return out
