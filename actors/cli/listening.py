"""The end-of-run summary's lines about the champion on the test set, and where its samples are.

    for line in describe(final_test(state)): print(line)

The measuring is the tester's (``actors/tester.py``: ``ChampionTested`` events, one per new
champion and a final one with the listening samples); this only words the final one.

Imports ``state`` and ``protocol.metrics`` only.
"""

from __future__ import annotations

from ...protocol import metrics as mx
from ...state.model import ChampionTest


def describe(test: ChampionTest) -> list[str]:
    """The summary's lines about the test set."""
    if test.error is not None:
        return [f"  on the test set ({test.test_set}): not measured: {test.error}"]
    m = test.metrics
    prefix = "ema_" if f"ema_{mx.VAL_OBJECTIVE}" in m else ""  # the averaged weights, when kept, are the answer

    def get(name: str) -> float:
        return m.get(prefix + name, m.get(name, float("nan")))

    lines = [
        f"  on the test set ({test.test_set}: {test.n_sentences} sentences no decision saw): objective "
        f"{get(mx.VAL_OBJECTIVE):.4f}, diagonality {get(mx.DIAGONALITY):.2f}; free-running: gate stopped "
        f"{get(mx.FR_GATE_STOP_RATE):.0%} in time, length {get(mx.FR_LENGTH_RATIO):.2f}x the reference, "
        f"MCD-DTW {get(mx.FR_MCD_DTW):.1f} dB",
    ]
    if test.samples:
        lines.append(
            f"  listening samples: {test.samples}/ ({test.n_sentences} WAVs, Griffin-Lim; samples.json lists them)"
        )
    return lines
