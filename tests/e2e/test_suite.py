"""The benchmark suite keeps working: ``python bench/suite.py --smoke`` runs every arm, keeps its
results, continues where it stopped, and never shows the tuner a test utterance."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "bench" / "suite.py"
ARMS = ("control", "forks", "pbt", "trials", "ray_pbt", "optuna_hb", "oracle")


def suite(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SUITE), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(900)
def test_the_smoke_pass_runs_every_arm_keeps_its_results_and_continues(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    first = suite("--smoke", "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    # six arms and three of the oracle's four grid points: the fourth is the control's hyperparameters
    assert "9 (task, arm, seed) runs to do" in first.stdout
    result = [line for line in first.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(result) == 1 and result == [first.stdout.strip().splitlines()[-1]]
    values = dict(part.split("=") for part in result[0].split()[1:])
    assert set(values) == {f"{kind}_{arm}" for arm in ARMS[1:] for kind in ("geo", "worst")}
    assert all(float(v) > 0 for v in values.values())

    results = sorted((out / "results").glob("smoke-*/*/seed1.json"))
    points = [p.parent.name for p in results if p.parent.name.startswith("oracle.")]
    assert [p.parent.name for p in results if p.parent.name not in points] == sorted(ARMS) and len(points) == 4
    for point in points:  # each grid point trained with its own hyperparameters (once, two shared a config file)
        run = json.loads((out / "results").glob(f"smoke-*/{point}/seed1.json").__next__().read_text())
        recorded = yaml.safe_load((Path(run["run_dir"]) / "config.yaml").read_text())["trainer"]["hparams"]
        lr, level = point.removeprefix("oracle.lr").split("-reg-")
        assert recorded["learning_rate"] == float(lr), point
        assert (recorded.get("adam_beta2") == 0.98) == (level == "low"), point
        if point == "oracle.lr0.001-reg-default":  # the control's own run, not trained again
            control = json.loads(next((out / "results").glob("smoke-*/control/seed1.json")).read_text())
            assert run["run_dir"] == control["run_dir"] and run["test_objective"] == control["test_objective"]
    results = [p for p in results if p.parent.name not in points]
    for path in results:
        r = json.loads(path.read_text())
        assert r["steps"] == (4 * 12 if r["arm"] == "oracle" else 12)  # the oracle: 4 grid points here
        assert 0 < r["test_objective"] < 10 and "fr_gate_stop_rate" in r["test"] and r["lineage"]
    assert not list(out.rglob("*.pt"))  # measured, then deleted

    # the split: test utterances are never in the tuner's folder, and the split is on record
    (task_dir,) = (out / "tasks").glob("smoke-*")
    split = json.loads((task_dir / "split.json").read_text())
    tuner_ids = {line.split("|")[0] for line in (task_dir / "tuner" / "metadata.csv").read_text().splitlines()}
    assert len(split["test"]) == 4 and not set(split["test"]) & tuner_ids and tuner_ids == set(split["tuner"])

    again = suite("--smoke", "--out", str(out))
    assert again.returncode == 0 and "0 (task, arm, seed) runs to do" in again.stdout
    oracle = json.loads((results[[p.parent.name for p in results].index("oracle")]).read_text())
    assert oracle["detail"]["point"] == min(oracle["detail"]["selection"], key=oracle["detail"]["selection"].get)
    assert again.stdout.strip().splitlines()[-1] == result[0]
    assert re.search(r"^cost: 9 runs, [0-9.]+ h of run time", again.stdout, re.M)  # the oracle's copied point once
    assert re.search(r"^code: [0-9a-f]{7}", again.stdout, re.M)

    report = suite("--smoke", "--report", "--out", str(out))
    assert report.returncode == 0 and "0 (task, arm, seed) runs still to do" in report.stdout
    assert report.stdout.strip().splitlines()[-1] == result[0]
    assert re.search(r"^selection split, .*: forks [0-9.]+ \(worst [0-9.]+\)", report.stdout, re.M)

    # a variant: a product strategy with a config key changed, run as one more arm beside the others
    variant = suite("--smoke", "--arms", "p2", "--variant", "p2=forks:forks.probe_steps=2", "--out", str(out))
    assert variant.returncode == 0 and "1 (task, arm, seed) runs to do" in variant.stdout, variant.stderr[-3000:]
    run = json.loads(next((out / "results").glob("smoke-*/p2/seed1.json")).read_text())
    recorded = yaml.safe_load((Path(run["run_dir"]) / "config.yaml").read_text())
    assert recorded["strategy"] == "forks" and recorded["forks"]["probe_steps"] == 2 and run["steps"] == 12
    assert run["detail"]["variant"] == {"strategy": "forks", "overrides": {"forks.probe_steps": 2}}
    assert re.search(r"^smoke +p2 +1 ", variant.stdout, re.M) and "geo_p2=" in variant.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "corpus=/no/such/corpus"], "no such dataset directory or filelist"),
        (["--task", "corpus=/tmp,budget=lots"], "budget must be an integer, got 'lots'"),
        (["--task", "corpus=/tmp,colour=red"], "unknown key(s) colour"),
        (["--tasks", "huge"], "unknown task 'huge'"),
        (["--arms", "control,magic"], "unknown arm(s) magic"),
        (["--variant", "c3=forks"], "expected NAME=STRATEGY:key=value"),
        (["--variant", "forks=forks:forks.candidates=3"], "the name 'forks' must be new"),
        (["--variant", "c3=control:seed=2"], "the strategy must be forks, pbt or trials, got 'control'"),
        (["--variant", "c3=forks:forks.=3"], "'forks.=3' is not key=value"),
    ],
)
def test_bad_tasks_and_arms_are_refused_by_name(tmp_path: Path, args: list[str], message: str) -> None:
    proc = suite(*args, "--out", str(tmp_path / "suite"), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(re.escape(message), proc.stderr), proc.stderr


def resampled_corpus(source: Path, dest: Path, rate: int, odd_one: int | None = None) -> Path:
    """An LJSpeech copy of ``source`` at ``rate`` Hz (linear interpolation: fine for a test)."""
    import numpy as np

    from smart_tuner.trainer.audio import read_wav, save_wav

    (dest / "wavs").mkdir(parents=True)
    lines = (source / "metadata.csv").read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        uid = line.split("|")[0]
        audio, old = read_wav(source / "wavs" / f"{uid}.wav")
        new = old if n == odd_one else rate
        t = np.arange(int(len(audio) * new / old)) * old / new
        save_wav(dest / "wavs" / f"{uid}.wav", np.interp(t, np.arange(len(audio)), audio).astype(np.float32), new)
    (dest / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


@pytest.mark.timeout(600)
def test_a_users_corpus_at_its_own_sample_rate_is_read_at_that_rate(tmp_path: Path, tiny_data_dir: Path) -> None:
    corpus = resampled_corpus(tiny_data_dir / "tiny-corpus", tmp_path / "lj16k", 16000)
    out = tmp_path / "suite"
    task = f"corpus={corpus},preset=tiny,batch=4,budget=6,n_select=4,n_test=4"
    proc = suite("--task", task, "--arms", "control", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (split,) = (out / "tasks").glob("lj16k-*/split.json")
    assert json.loads(split.read_text())["audio"] == {"sampling_rate": 16000, "mel_fmax": 8000.0}
    (result,) = (out / "results").glob("lj16k-*/control/seed1.json")
    assert json.loads(result.read_text())["test_objective"] > 0

    mixed = resampled_corpus(tiny_data_dir / "tiny-corpus", tmp_path / "mixed", 16000, odd_one=3)
    refused = suite("--task", f"corpus={mixed},preset=tiny,batch=4,budget=6,n_select=4,n_test=4", "--out", str(out))
    assert (
        refused.returncode == 2
        and "mixes sample rates: 16000 Hz" in refused.stderr
        and "Traceback" not in refused.stderr
    )
