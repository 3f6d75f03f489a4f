"""How long from a metric being written to its canonical event being committed, per source.

    python bench/watcher_latency.py [--steps 60] [--dir DIR]

One run, four arms one after another, each through the real path to a real sequencer on
an fsync'ed journal (the coordinator's, over ZeroMQ ipc):

* native: a worker process reporting through ``trainer.loop.WorkerLoop`` (outbox, sender
  task, DEALER) -> the supervisor's relay (ROUTER, ``propose_payload``) -> commit;
* stdout / tensorboard / mlflow: the real ``actors.external.worker`` running a stand-in
  training script that writes each step's loss one way: a console line (flushed), a
  ``torch.utils.tensorboard`` scalar followed by ``flush()``, or an MLflow ``log_metric``
  into a sqlite store; the external worker polls its source for that segment and
  reports, then the same relay and commit.

The writer records the wall-clock time right after the write (after the flush, after
``log_metric`` returned); the bench records the wall-clock time of each commit
(``Sequencer.on_commit``). Steps are spaced 50-250 ms apart at random so they do not
phase-lock with the sources' polling. Goals (issue 5): native < 50 ms, stdout < 100 ms,
TensorBoard and MLflow < 1 s after the writer flushed.

Ends with ``RESULT native_p50_ms=… native_p95_ms=… stdout_p50_ms=… … mlflow_p95_ms=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smart_tuner.actors.bus.zmqbus import (
    SocketOptions,
    WorkerServer,
    ZmqClient,
    ZmqSequencerPort,
    ipc_endpoints,
    new_context,
)
from smart_tuner.actors.sequencer import Sequencer, SequencerSettings
from smart_tuner.actors.supervisor.launcher import EXTERNAL_SPEC_ENV
from smart_tuner.protocol import Envelope, ProtocolError, decode, encode
from smart_tuner.protocol import messages as m
from smart_tuner.state.journal import FileJournal
from smart_tuner.state.model import TunerState

# A worker that reports one metric per step through the worker protocol's own report path.
NATIVE = """
import asyncio, os, random, sys, time
from smart_tuner.actors.bus.zmqbus import new_context
from smart_tuner.protocol import messages as m
from smart_tuner.trainer.client import SupervisorClient
from smart_tuner.trainer.worker_loop import WorkerLoop
endpoint, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Bench(WorkerLoop):
    def hello(self):
        return m.WorkerHello(worker_id="n1", pid=os.getpid(), device="cpu", hparams={}, metrics=("train_loss",))
    def progress(self):
        return None
    async def run_segment(self, cmd):
        rows = []
        for i in range(1, steps + 1):
            await asyncio.sleep(random.uniform(0.05, 0.25))
            self.offer(m.MetricsObserved(segment_id=cmd.segment_id, source="worker", step=i,
                                         metrics={"train_loss": 1.0 / i}))
            rows.append(f"{i} {time.time()!r}")
        await self.flush_reports()
        open(out, "w").write("\\n".join(rows))
        await self.send(m.SegmentFailed(segment_id=cmd.segment_id, reason="aborted", detail="bench done"))

async def main():
    ctx = new_context()
    client = SupervisorClient(ctx, endpoint, "n1")
    await Bench(client, 0.5, os.getppid()).run()
asyncio.run(main())
"""

# The stand-in training script for the external arms: one way of writing per run.
SCRIPT = """
import os, random, sys, time, zipfile
way, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = []
if way == "tensorboard":
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(os.path.join(out, "logs"))
if way == "mlflow":
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=sys.argv[4])
    exp = client.get_experiment_by_name("bench")
    run_id = client.create_run(exp.experiment_id).info.run_id
for i in range(1, steps + 1):
    time.sleep(random.uniform(0.05, 0.25))
    loss = 1.0 / i
    if way == "stdout":
        print(f"Train loss {i} {loss:.6f} Grad Norm 1.000000 0.10s/it", flush=True)
    elif way == "tensorboard":
        writer.add_scalar("training.loss", loss, i)
        writer.flush()
    else:
        client.log_metric(run_id, "training.loss", loss, step=i)
    rows.append(f"{i} {time.time()!r}")
with open(os.path.join(out, "written.txt"), "w") as f:
    f.write("\\n".join(rows))
if way == "stdout":
    print(f"Validation loss {steps}: 0.5", flush=True)
elif way == "tensorboard":
    writer.add_scalar("validation.loss", 0.5, steps)
    writer.flush()
else:
    client.log_metric(run_id, "validation.loss", 0.5, step=steps)
with zipfile.ZipFile(os.path.join(out, f"checkpoint_{steps}"), "w") as z:
    z.writestr("iteration", str(steps))
time.sleep(3600)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def relay(server: WorkerServer, client: ZmqClient, hellos: set[str]) -> None:
    """The supervisor's relay (SupervisorIO._on_worker_message): worker events to the journal as proposed."""
    while True:
        item = await server.recv(0.5)
        if item is None:
            continue
        try:
            env = decode(item[1])
        except ProtocolError:
            continue
        if isinstance(env.data, m.WorkerHello):
            hellos.add(item[0].decode())
        elif isinstance(env.data, m.MetricsObserved):
            await client.propose_payload(item[1], 10.0)


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stderr=err, start_new_session=True)


async def arm(
    name: str,
    directory: Path,
    steps: int,
    server: WorkerServer,
    committed: dict[tuple[str, int], float],
    hellos: set[str],
    mlflow_uri: str,
) -> list[float]:
    """One arm: start the writer, run one segment, pair each written step with its commit."""
    out = directory / name
    out.mkdir()
    env = dict(os.environ)
    if name == "native":
        written = out / "written.txt"
        cmd = [sys.executable, "-c", NATIVE, server.endpoint, str(steps), str(written)]
        worker_id = "n1"
    else:
        code = SCRIPT.replace("{", "{{").replace("}", "}}")  # literal braces in a command template
        section = {
            "command": [
                sys.executable,
                "-c",
                code,
                name,
                "{output_dir}",
                str(steps),
                mlflow_uri,
                "{checkpoint}",
                "{hparams}",
            ],
            "hparams": {"x": 1},
            "stdout": name == "stdout",
            "tensorboard_dir": "logs" if name == "tensorboard" else None,
            "mlflow_tracking_uri": mlflow_uri if name == "mlflow" else None,
            "mlflow_experiment": "bench" if name == "mlflow" else None,
            "checkpoint_timeout_s": 30,
            "sigint_timeout_s": 5,
        }
        env[EXTERNAL_SPEC_ENV] = json.dumps(section)
        cmd = [
            sys.executable,
            "-m",
            "smart_tuner.actors.external.worker",
            "--endpoint",
            server.endpoint,
            "--worker-id",
            "x1",
            "--output-dir",
            str(out),
            "--heartbeat-s",
            "0.5",
        ]
        written = out / name / "written.txt"
        worker_id = "x1"
    proc = spawn(cmd, env, out / "stderr.log")
    try:
        deadline = time.monotonic() + 180
        while worker_id not in hellos and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name}: the worker exited: {(out / 'stderr.log').read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        run = m.RunSegment(
            segment_id=name,
            from_checkpoint=None,
            from_sha256=None,
            hparams={},
            steps=steps,
            eval_every=0,
            report_every=1,
        )
        await server.send(worker_id.encode(), encode(Envelope.new(run, actor="bench")))
        while time.monotonic() < deadline:
            if written.exists() and sum(1 for k in committed if k[0] == name) >= steps:
                break
            await asyncio.sleep(0.2)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    rows = [line.split() for line in written.read_text().splitlines()] if written.exists() else []
    return [committed[(name, int(step))] - float(t) for step, t in rows if (name, int(step)) in committed]


async def main_async(steps: int, directory: Path) -> dict[str, list[float]]:
    journal = FileJournal.open(directory / "events.log")
    ctx = new_context()
    port = ZmqSequencerPort(ctx, ipc_endpoints(directory / "bus"), SocketOptions(linger_ms=0))
    sequencer = Sequencer(journal, port, TunerState(), SequencerSettings(state_write_interval_s=3600))
    committed: dict[tuple[str, int], float] = {}

    def on_commit(env: Envelope) -> None:
        if isinstance(env.data, m.MetricsObserved) and env.data.segment_id is not None:
            committed.setdefault((env.data.segment_id, env.data.step), time.time())

    sequencer.on_commit(on_commit)
    task = asyncio.create_task(sequencer.run())
    await sequencer.ready.wait()
    client = ZmqClient(ctx, port.endpoints, SocketOptions(linger_ms=0), subscribe=False)
    started = m.RunStarted(
        run_id="bench", config_hash="0" * 64, config={}, strategy="forks", seed=0, host="bench", pid=0, version="bench"
    )
    await client.propose(Envelope.new(started, actor="bench"))
    server = WorkerServer(ctx, ipc_endpoints(directory / "wbus").workers, SocketOptions(linger_ms=0))
    hellos: set[str] = set()
    relaying = asyncio.create_task(relay(server, client, hellos))
    mlflow_uri = f"sqlite:///{directory / 'mlflow.db'}"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=mlflow_uri).create_experiment("bench")  # a fresh store takes seconds: up front
    out: dict[str, list[float]] = {}
    try:
        for name in ("native", "stdout", "tensorboard", "mlflow"):
            hellos.clear()
            out[name] = await arm(name, directory, steps, server, committed, hellos, mlflow_uri)
            print(f"{name:12s} {len(out[name])}/{steps} steps paired", file=sys.stderr, flush=True)
    finally:
        relaying.cancel()
        await asyncio.gather(relaying, return_exceptions=True)
        await server.aclose()
        await client.aclose()
        sequencer.stop()
        await task
        await port.aclose()
        ctx.term()
        journal.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="metrics written per source")
    parser.add_argument("--dir", type=Path, help="where the journal and the arms' files go (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = asyncio.run(main_async(args.steps, Path(tmp)))
    print(f"{'source':12s} {'n':>4s} {'p50 ms':>9s} {'p95 ms':>9s} {'max ms':>9s}")
    fields = []
    for name, lat in results.items():
        if not lat:
            print(f"{name:12s}    0  (no step paired)")
            fields += [f"{name}_p50_ms=nan", f"{name}_p95_ms=nan"]
            continue
        ms = [x * 1000 for x in lat]
        p50, p95 = statistics.median(ms), percentile(ms, 0.95)
        print(f"{name:12s} {len(ms):4d} {p50:9.1f} {p95:9.1f} {max(ms):9.1f}")
        fields += [f"{name}_p50_ms={p50:.1f}", f"{name}_p95_ms={p95:.1f}"]
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
