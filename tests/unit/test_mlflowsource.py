"""The MLflow source on a real sqlite store written by another process: only new steps, each once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from smart_tuner.actors.watcher.mlflow_source import MlflowSource

WRITER = """
import os, sys
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
from mlflow.tracking import MlflowClient
uri, what, run_id, first, last = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
client = MlflowClient(tracking_uri=uri)
if what == "new":
    exp = client.get_experiment_by_name("tts") or client.get_experiment(client.create_experiment("tts"))
    tags = {"mlflow.parentRunId": run_id} if run_id != "-" else {}
    run_id = client.create_run(exp.experiment_id, tags=tags).info.run_id
for i in range(first, last):
    client.log_metric(run_id, "loss", 1.0 / (i + 1), step=i)
    client.log_metric(run_id, "lr", 1e-3, step=i)
    client.log_metric(run_id, "epoch_time", 3.0, step=i)
    if i % 5 == 4:
        client.log_metric(run_id, "val_loss", 2.0 / (i + 1), step=i)
print(run_id)
"""


def write(uri: str, what: str, run_id: str, first: int, last: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", WRITER, uri, what, run_id, str(first), str(last)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_a_run_logged_by_another_process_is_read_incrementally(store: str) -> None:
    run_id = write(store, "new", "-", 0, 5)
    source = MlflowSource(store, run_id=run_id, segment_of=lambda: "seg")
    first = source.read()
    assert [r.step for r in first] == [0, 1, 2, 3, 4]
    assert first[4].metrics == {"train_loss": pytest.approx(0.2), "learning_rate": 1e-3, "val_loss": pytest.approx(0.4)}
    assert first[0].segment_id == "seg" and source.unmapped["epoch_time"] == 1
    assert source.read() == []  # nothing new
    write(store, "append", run_id, 5, 8)
    assert [r.step for r in source.read()] == [5, 6, 7]  # only the new steps


def test_the_newest_run_of_an_experiment_and_the_children_of_a_parent(store: str) -> None:
    newest = write(store, "new", "-", 0, 3)
    by_experiment = MlflowSource(store, experiment="tts").read()
    assert [r.step for r in by_experiment] == [0, 1, 2]
    parent = write(store, "new", "-", 0, 0)
    write(store, "new", parent, 0, 2)
    write(store, "new", parent, 2, 4)  # a resumed segment logs under a second child
    children = MlflowSource(store, parent_run_id=parent).read()
    assert [r.step for r in children] == [0, 1, 2, 3]
    assert newest != parent
    with pytest.raises(ValueError, match="exactly one"):
        MlflowSource(store, run_id="x", experiment="tts")


def test_only_a_run_started_since_a_moment_is_followed(store: str) -> None:
    import time

    write(store, "new", "-", 0, 3)  # an older run of the experiment: a previous segment's
    since = int(time.time() * 1000)
    source = MlflowSource(store, experiment="tts", started_after_ms=since)
    assert source.read() == []  # the script has not started its own run yet
    write(store, "new", "-", 10, 12)
    assert [r.step for r in source.read()] == [10, 11]


def test_a_users_own_key_names(store: str) -> None:
    run_id = write(store, "new", "-", 0, 2)
    source = MlflowSource(store, run_id=run_id, mapping={"epoch_time": "step_time_s", "loss": "val_loss"}.get)
    readings = source.read()
    assert readings[-1].metrics["step_time_s"] == 3.0 and "epoch_time" not in source.unmapped
    assert "val_loss" in readings[0].metrics and "train_loss" not in readings[0].metrics  # theirs first
