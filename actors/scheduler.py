"""The scheduler: turns one rung of a trial in a planned round into the ``SegmentScheduled`` to run it.

    msg = plan_segment(state, rnd, trial, rung)                                # a rung's first run
    msg = plan_segment(state, rnd, trial, rung, rerun=hp, attempt=1)           # after a rollback
    msg = plan_segment(state, rnd, trial, rung, attempt=1, kind="re")          # after an abort

It also decides the worker's cadence, recorded in the event: a metric report about every
tenth of the segment (at least every 10 steps) and validation at the segment's end only.

The scheduler role of the design is carried by the tuner actor: the round engine calls this
module to plan each segment, and the tuner proposes the SegmentScheduled event it returns.

A segment starts from the trial's last finished segment, else from its own starting point
in a PBT generation (``Round.starts``), else from the round's checkpoint; it trains the
trial's hyperparameters with the guard rails' adjustments (the run's, then the trial's own) and a
rollback's values on top.

Imports the standard library, ``protocol`` and ``state`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..protocol import messages as m
from ..state.model import Round, Trial, TunerState
from ..state.queries import segments_of


def report_cadence(steps: int) -> int:
    """Steps between a segment's metric reports: about ten reports a segment, at least every 10 steps."""
    return max(1, min(10, steps // 10))


EVAL_EVERY = 0  # validate at the segment's end only: candidates are compared there, on the same batches


def plan_segment(
    state: TunerState,
    rnd: Round,
    trial: Trial,
    rung: int,
    rerun: Mapping[str, Any] | None = None,
    attempt: int = 0,
    kind: str = "rb",
) -> m.SegmentScheduled:
    """``kind``: ``rb`` a re-run after a rollback, ``re`` after an abort (the segment id says which)."""
    finished = [s for s in segments_of(state, trial.trial_id) if s.status == "finished"]
    if finished:
        start, sha, step = finished[-1].checkpoint, finished[-1].checkpoint_sha256, finished[-1].end_step or 0
    elif trial.trial_id in rnd.starts:  # a member of a PBT generation: its own starting point
        origin = state.tuning.segments[rnd.starts[trial.trial_id]]
        start, sha, step = origin.checkpoint, origin.checkpoint_sha256, origin.end_step or 0
    else:
        start, sha, step = rnd.from_checkpoint, rnd.from_sha256, rnd.start_step
    hp = {**trial.hparams, **state.tuning.adjustments, **trial.adjustments, **(rerun or {})}
    sid = f"r{rnd.round}-{trial.trial_id}-g{rung}" + (f"-{kind}{attempt}" if attempt else "")
    why = f"round {rnd.round}, rung {rung}: {trial.trial_id} trains {rnd.rung_steps[rung]} steps from step {step}"
    if attempt:
        why += f" (re-run {attempt} after " + ("a rollback)" if kind == "rb" else "it was aborted)")
    return m.SegmentScheduled(
        segment_id=sid,
        trial_id=trial.trial_id,
        from_checkpoint=start,
        from_sha256=sha,
        start_step=step,
        steps=rnd.rung_steps[rung],
        hparams=hp,
        reason=why,
        report_every=report_cadence(rnd.rung_steps[rung]),
        eval_every=EVAL_EVERY,
        evidence={
            "round": rnd.round,
            "rung": rung,
            "sampler": trial.sampler,
            "adjustments": dict(state.tuning.adjustments),
            **({"trial_adjustments": dict(trial.adjustments)} if trial.adjustments else {}),
        },
    )
