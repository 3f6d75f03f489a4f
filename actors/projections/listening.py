"""The end-of-run test result into MLflow and TensorBoard, beside the run's other projections.

    project_test_result(run_dir, metrics, samples_dir)

MLflow: the test metrics on the run's parent run as ``test_<name>`` and the samples folder
(WAVs and ``samples.json``) as its ``samples/`` artifacts. TensorBoard: ``test/`` holds the
test metrics as scalars and each WAV as audio (``tensorboard --logdir runs/<id>/tensorboard``,
the Audio tab). What was measured comes from ``actors/cli/listening.py``; this only writes it.

Imports the standard library, mlflow, tensorboard and the projector's experiment name only.
"""

from __future__ import annotations

import logging
import math
import os
import time
import wave
from collections.abc import Mapping
from pathlib import Path

from .projector import EXPERIMENT


def project_test_result(run_dir: Path, metrics: Mapping[str, float], samples: Path) -> None:
    _to_tensorboard(run_dir / "tensorboard" / "test", metrics, samples)
    if (run_dir / "mlflow.db").is_file():
        _to_mlflow(run_dir, metrics, samples)


def _to_mlflow(run_dir: Path, metrics: Mapping[str, float], samples: Path) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return
    query = f"tags.`smart_tuner.run_id` = '{run_dir.name}' and tags.`smart_tuner.kind` = 'parent'"
    found = client.search_runs([experiment.experiment_id], query)
    if not found:
        return
    parent = found[0].info.run_id
    now = int(time.time() * 1000)
    values = [Metric(f"test_{k}", float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)]
    client.log_batch(parent, metrics=values)
    client.log_artifacts(parent, str(samples), "samples")


def _to_tensorboard(folder: Path, metrics: Mapping[str, float], samples: Path) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    try:
        scalars = [
            summary_pb2.Summary.Value(tag=f"test/{k}", simple_value=float(v))
            for k, v in sorted(metrics.items())
            if math.isfinite(v)
        ]
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary_pb2.Summary(value=scalars)))
        for path in sorted(samples.glob("*.wav")):
            data = path.read_bytes()
            with wave.open(str(path), "rb") as w:
                rate, frames, channels = w.getframerate(), w.getnframes(), w.getnchannels()
            audio = summary_pb2.Summary.Audio(
                sample_rate=float(rate),
                num_channels=channels,
                length_frames=frames,
                encoded_audio_string=data,
                content_type="audio/wav",
            )
            value = summary_pb2.Summary.Value(tag=f"samples/{path.stem}", audio=audio)
            writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary_pb2.Summary(value=[value])))
    finally:
        writer.close()
