"""The end of a run: its champion measured on held-out sentences, and what it sounds like.

    result = test_champion(paths, cfg, state)     # None: no test set, no champion, or not finished
    result.metrics["fr_gate_stop_rate"], result.samples   # samples/: WAVs and samples.json

When a native run (our trainer) has finished, the champion's checkpoint is measured on the
run's test set, sentences no decision saw: ``trainer.test_dataset``, or for the demo corpus
its own sixteen test sentences (``trainer/corpus.py``: ``ensure_demo_test_set``). The
measuring runs in a process of its own, ``python -m smart_tuner.trainer.heldout``, because
the coordinator's process never loads torch; it writes each sentence as the champion says
it free-running (Griffin-Lim WAVs, ``samples.json``) and the metrics
(``samples/test_metrics.json``) into the run directory; ``projections/listening.py`` adds
them to MLflow (the parent run's ``test_*`` metrics and ``samples/`` artifacts) and
TensorBoard (``test/``: scalars and audio). A failure here is reported in one line and leaves
the run's result as it was. External mode has no model of ours to ask.

Imports the standard library, ``state``, ``actors.rundir`` and ``projections.listening`` only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ...state.config import TunerConfig
from ...state.model import TunerState
from ..projections.listening import project_test_result
from ..rundir import RunPaths

HELDOUT = "smart_tuner.trainer.heldout"
DEMO_TEST = "demo-test"  # what the evaluator reads as the demo's own test sentences
TIMEOUT_S = 1800.0  # sixteen sentences take a minute on a CPU; this only catches a hung evaluator


@dataclass(frozen=True)
class TestResult:
    metrics: dict[str, float]
    samples: Path
    n_sentences: int


def test_set_of(cfg: TunerConfig) -> str | None:
    """The run's test set as the evaluator names it, or None when the run has none."""
    if cfg.external is not None or not cfg.trainer.listening_samples:
        return None
    if cfg.trainer.test_dataset is not None:
        return cfg.trainer.test_dataset
    return DEMO_TEST if cfg.trainer.dataset == "demo" else None


def test_champion(paths: RunPaths, cfg: TunerConfig, state: TunerState) -> TestResult | None:
    champion = state.tuning.champion
    test_set = test_set_of(cfg)
    if state.control.phase != "finished" or champion is None or not champion.checkpoint or test_set is None:
        return None
    samples = paths.root / "samples"
    metrics_file = samples / "test_metrics.json"
    cmd = [sys.executable, "-m", HELDOUT, champion.checkpoint, test_set, "--samples", str(samples)]
    cmd += ["--json", str(metrics_file)]
    print(f"measuring the champion on the test set ({test_set}) and writing listening samples ...", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        print(f"warning: the test-set evaluation took over {TIMEOUT_S:.0f} s and was stopped", file=sys.stderr)
        return None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"warning: the champion could not be measured on the test set: {why}", file=sys.stderr)
        return None
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    listing = json.loads((samples / "samples.json").read_text(encoding="utf-8"))
    try:
        project_test_result(paths.root, metrics, samples)
    except Exception as exc:  # a projection's failure costs the projection, never the files written
        print(f"warning: the test result could not be written to MLflow/TensorBoard: {exc!r}", file=sys.stderr)
    return TestResult(metrics, samples, len(listing))


def describe(result: TestResult) -> list[str]:
    """The summary's lines about the test set."""
    m = result.metrics
    prefix = "ema_" if "ema_val_objective" in m else ""  # the averaged weights, when kept, are the answer

    def get(name: str) -> float:
        return m.get(prefix + name, m.get(name, float("nan")))

    return [
        f"  on the test set ({result.n_sentences} sentences no decision saw): objective {get('val_objective'):.4f}, "
        f"diagonality {get('diagonality'):.2f}; free-running: gate stopped {get('fr_gate_stop_rate'):.0%} "
        f"in time, length {get('fr_length_ratio'):.2f}x the reference, MCD-DTW {get('fr_mcd_dtw'):.1f} dB",
        f"  listening samples: {result.samples}/ ({result.n_sentences} WAVs, Griffin-Lim; samples.json lists them)",
    ]
