"""The TensorBoard projection: event files written with tensorboard's own writer (no TensorFlow, no torch).

    tb = TensorBoardWriter(run_dir / "tensorboard")
    tb.project(env, scheduled)        # from the projections thread, one committed event at a time
    tb.close()

Layout: ``segments/<segment_id>/`` holds one segment's scalars on the global step, its
alignment image and its hyperparameters (text); ``champion/`` the champion lineage as
one continuous curve (a round's winner is appended when it is promoted); ``test/`` each
champion's test-set metrics at its step and, at the end, its listening samples as audio. So
``tensorboard --logdir runs/<id>/tensorboard`` shows the lineage beside every fork.

Imports the standard library and tensorboard only; called from a thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...protocol import Envelope
from ...protocol import messages as m

SEGMENTS_OPEN = 8  # segment writers kept open; older ones are closed (their files stay)


class TensorBoardWriter:
    def __init__(self, root: Path) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary, self._writer_cls = event_pb2, summary_pb2, EventFileWriter
        self.root = root
        self.writers: dict[str, Any] = {}
        self.series: dict[str, list[tuple[int, dict[str, float]]]] = {}
        self.champion_step = -1

    def _writer(self, name: str) -> Any:
        w = self.writers.get(name)
        if w is None:
            if len(self.writers) >= SEGMENTS_OPEN:
                oldest = next(k for k in self.writers if k != "champion")
                self.writers.pop(oldest).close()
            w = self.writers[name] = self._writer_cls(str(self.root / name), flush_secs=5)
        return w

    def _scalars(self, name: str, step: int, values: Mapping[str, float], ts: float) -> None:
        vals = [self._summary.Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items() if _finite(v)]
        if vals:
            ev = self._event.Event(wall_time=ts, step=step, summary=self._summary.Summary(value=vals))
            self._writer(name).add_event(ev)

    def _image(self, name: str, tag: str, step: int, png: bytes, ts: float) -> None:
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
        img = self._summary.Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
        value = self._summary.Summary.Value(tag=tag, image=img)
        ev = self._event.Event(wall_time=ts, step=step, summary=self._summary.Summary(value=[value]))
        self._writer(name).add_event(ev)

    def _audio(self, name: str, tag: str, step: int, wav: Path, ts: float) -> None:
        import wave

        data = wav.read_bytes()
        with wave.open(str(wav), "rb") as w:
            rate, frames, channels = w.getframerate(), w.getnframes(), w.getnchannels()
        audio = self._summary.Summary.Audio(
            sample_rate=float(rate),
            num_channels=channels,
            length_frames=frames,
            encoded_audio_string=data,
            content_type="audio/wav",
        )
        value = self._summary.Summary.Value(tag=tag, audio=audio)
        self._writer(name).add_event(
            self._event.Event(wall_time=ts, step=step, summary=self._summary.Summary(value=[value]))
        )

    def _text(self, name: str, tag: str, step: int, text: str, ts: float) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        ev = self._event.Event(wall_time=ts, step=step, summary=text_pb(tag, text))
        self._writer(name).add_event(ev)

    def project(self, env: Envelope, scheduled: Mapping[str, m.SegmentScheduled]) -> None:
        msg = env.data
        if isinstance(msg, m.SegmentScheduled):
            table = "\n".join(f"| {k} | {v} |" for k, v in sorted(msg.hparams.items()))
            self._text(
                f"segments/{msg.segment_id}",
                "hparams",
                msg.start_step,
                f"{msg.reason}\n\n| name | value |\n|---|---|\n{table}",
                env.ts,
            )
        elif isinstance(msg, m.MetricsObserved) and msg.segment_id is not None:
            self._scalars(f"segments/{msg.segment_id}", msg.step, msg.metrics, env.ts)
            self.series.setdefault(msg.segment_id, []).append((msg.step, dict(msg.metrics)))
        elif isinstance(msg, m.SegmentFinished):
            name = f"segments/{msg.segment_id}"
            self._scalars(name, msg.end_step, msg.metrics, env.ts)
            self.series.setdefault(msg.segment_id, []).append((msg.end_step, dict(msg.metrics)))
            png = Path(msg.checkpoint).with_suffix(".alignment.png")
            if png.is_file():
                self._image(name, "alignment", msg.end_step, png.read_bytes(), env.ts)
            self._writer(name).flush()
        elif isinstance(msg, m.ChampionPromoted):
            for step, values in self.series.get(msg.segment_id, []):
                if step > self.champion_step:
                    self._scalars("champion", step, values, env.ts)
            self.champion_step = max(self.champion_step, msg.step)
            self._scalars("champion", msg.step, {"champion_objective": msg.objective}, env.ts)
            self._writer("champion").flush()
        elif isinstance(msg, m.ChampionTested) and msg.error is None:
            self._scalars("test", msg.step, msg.metrics, env.ts)
            if msg.final and msg.samples:
                for wav in sorted(Path(msg.samples).glob("*.wav")):
                    self._audio("test", f"samples/{wav.stem}", msg.step, wav, env.ts)
            self._writer("test").flush()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)
