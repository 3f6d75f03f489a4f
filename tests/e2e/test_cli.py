"""The command line as a user runs it: ``python run_tuner.py ...`` in real processes.

Each test works in its own scratch directory (``runs/`` is created there) with real ZeroMQ ipc
sockets, real journals and real signals; nothing is mocked. Tests wait for observable facts
(events in the journal, lines on a process's output, a process's exit) with deadlines, never
for time to pass. Runs train the tiny model with a real worker process: ``KEEPALIVE`` is one
segment far longer than any test (the run lives until it is stopped), ``TINY_RUN`` a whole
tuning run on a 40-step budget that finishes by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
from pathlib import Path

import pytest
import yaml

from smart_tuner.actors.bus.zmqbus import BusEndpoints, SocketOptions, ZmqClient, new_context
from smart_tuner.actors.cli.main import COMMANDS
from smart_tuner.protocol import Envelope
from smart_tuner.protocol import messages as m
from smart_tuner.state.journal import FRAME, MAGIC, writer_active
from tests.e2e.cliharness import SECRET_ENV, Cli, Spawned

TINY_TRAINER = "trainer: {preset: tiny, dataset: tiny, data_dir: data, threads: 1, val_count: 4, heartbeat_s: 0.5}\n"
KEEPALIVE = "strategy: none\nbudget: {max_steps: null}\nforks: {warmup_steps: 1000000}\n" + TINY_TRAINER
TINY_RUN = (
    "budget: {max_steps: 40}\nforks: {warmup_steps: 10, probe_steps: 5, exploit_steps: 10, first_round_candidates: 3}\n"
    + TINY_TRAINER
)
ACTORS = {"lifecycle", "stopper", "tuner", "guards", "supervisor"}
N_ALERTS = 300  # enough that tail sees the live feed and the log interleave, small enough for a few seconds
SECRET_URL = "tgram://SECRET_TOKEN_123/chat"


# --- helpers ------------------------------------------------------------------------------


def ready_since(cli: Cli, root: Path, after_seq: int = 0) -> bool:
    """Every actor recorded ActorReady after ``after_seq``."""
    ready = {e.data.actor for e in cli.events(root) if isinstance(e.data, m.ActorReady) and e.seq > after_seq}
    return ready >= ACTORS


def start_keepalive(cli: Cli, name: str = "coordinator", run_dir: str = "runs/live") -> tuple[Spawned, Path]:
    """A run that trains until it is stopped, in the background, once its actors are ready."""
    config = cli.write_config("keepalive.yaml", KEEPALIVE)
    proc = cli.spawn(name, "run", "--config", config, "--run-dir", run_dir)
    root = cli.cwd / run_dir
    cli.wait_until(lambda: ready_since(cli, root), "both actors are ready", proc=proc)
    return proc, root


def propose_alerts(bus_dir: Path, titles: list[str]) -> list[int]:
    """Propose one AlertSent per title through the run's bus, as another process would; their seqs."""

    async def propose() -> list[int]:
        ctx = new_context()
        client = ZmqClient(ctx, BusEndpoints.read(bus_dir), SocketOptions(linger_ms=0), subscribe=False)
        try:
            seqs = []
            for i, title in enumerate(titles):
                alert = m.AlertSent(channel="test", severity="info", title=title, dedup_key=str(i), ok=True)
                seqs.append(await client.propose(Envelope.new(alert, actor="test")))
            return seqs
        finally:
            await client.aclose()
            ctx.term()

    return asyncio.run(propose())


def state_yaml(root: Path) -> dict[str, object]:
    loaded = yaml.safe_load((root / "tuner_state.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def assert_verifies(cli: Cli, root: Path) -> None:
    verify = cli.run("replay", root, "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("OK: replaying events 1..")


def assert_projections(root: Path, events: list[Envelope]) -> None:
    """MLflow: one parent, one child per segment (tags, params, metrics); TensorBoard: a folder each."""
    from mlflow.tracking import MlflowClient

    scheduled = [e.data for e in events if isinstance(e.data, m.SegmentScheduled)]
    pruned = {e.data.trial_id for e in events if isinstance(e.data, m.TrialPruned)}
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smart-tuner")
    assert experiment is not None and experiment.artifact_location.startswith((root / "mlartifacts").as_uri())
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("smart_tuner.kind") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and parents[0].info.run_name == root.name
    children = {r.data.tags["smart_tuner.segment_id"]: r for r in runs if r not in parents}
    assert sorted(children) == sorted(s.segment_id for s in scheduled)  # one each, no duplicate
    for seg in scheduled:
        child = children[seg.segment_id]
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.tags["trial"] == seg.trial_id and child.data.tags["decision"] == seg.reason
        assert child.data.tags["pruned"] == ("true" if seg.trial_id in pruned else "false")
        assert child.data.tags["fork_of"]  # "scratch" or the segment whose checkpoint it continued
        assert child.data.params["steps"] == str(seg.steps) and "val_objective" in child.data.metrics
        assert (root / "tensorboard" / "segments" / seg.segment_id).is_dir()
    assert any((root / "tensorboard" / "champion").iterdir())


def only_run(cli: Cli) -> Path:
    runs = sorted((cli.cwd / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


# --- 1. the default run and the read-side commands --------------------------------------------


def test_a_tuning_run_finishes_by_itself_and_every_read_command_shows_it(cli: Cli) -> None:
    result = cli.run("run", "--config", cli.write_config("tiny.yaml", TINY_RUN))
    assert result.returncode == 0, result.stderr
    root = only_run(cli)
    rel = f"runs/{root.name}"

    # the run directory
    for name in ("events.log", "tuner_state.yaml", "config.yaml"):
        assert (root / name).is_file(), name
    log_lines = (root / "logs" / "coordinator.jsonl").read_text().splitlines()
    assert log_lines
    for line in log_lines:
        record = json.loads(line)
        assert isinstance(record, dict) and "event" in record and "level" in record
    assert stat.S_IMODE((root / "bus").stat().st_mode) == 0o700

    # the summary names the run and the commands to look at it
    assert f"Run {root.name}: completed - " in result.stdout
    assert "step budget spent: 40 of 40 steps" in result.stdout
    for command in ("status", "tail", "replay"):
        assert f"python run_tuner.py {command} {rel}" in result.stdout
    assert f"{rel} --verify" in result.stdout
    assert root.name in result.stderr  # "Smart Tuner run <id> in runs/<id>"

    events = cli.events(root)
    types = [e.type for e in events]
    assert types[0] == "RunStarted"
    assert types.count("StopDecided") == 1 and types.count("RunFinished") == 1
    finished = next(e.data for e in events if isinstance(e.data, m.RunFinished))
    assert finished.status == "completed"
    for kind in ("WorkerHello", "RoundPlanned", "TrialProposed", "SegmentFinished", "ChampionPromoted"):
        assert kind in types
    assert_projections(root, events)

    assert_verifies(cli, root)

    timeline = cli.run("replay", rel, "--timeline")
    assert timeline.returncode == 0, timeline.stderr
    lines = timeline.stdout.splitlines()
    kinds = ("RunStarted", "StopDecided", "RunFinished", "ActorReady")
    by_type = {kind: [line for line in lines if re.search(rf"\s{kind}\s", line)] for kind in kinds}
    assert len(by_type["RunStarted"]) == 1 and root.name in by_type["RunStarted"][0]
    assert len(by_type["StopDecided"]) == 1 and "step budget spent" in by_type["StopDecided"][0]
    assert len(by_type["RunFinished"]) == 1 and "completed - step budget spent" in by_type["RunFinished"][0]
    assert by_type["ActorReady"] == []  # lifecycle noise is not part of the timeline

    until = cli.run("replay", rel, "--until", "1")
    assert until.returncode == 0, until.stderr
    assert "\nlast_seq: 1\n" in until.stdout
    assert yaml.safe_load(until.stdout)["last_seq"] == 1

    out = cli.run("replay", rel, "--out", "replayed.yaml")
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert (cli.cwd / "replayed.yaml").read_bytes() == (root / "tuner_state.yaml").read_bytes()

    status = cli.run("status", rel)
    assert status.returncode == 0, status.stderr
    assert re.search(r"^phase\s+finished \(completed: ", status.stdout, re.MULTILINE), status.stdout
    assert re.search(r"^coordinator not running", status.stdout, re.MULTILINE), status.stdout

    # RUN omitted: the latest run; follow mode on a finished run ends by itself
    latest = cli.run("status")
    assert latest.returncode == 0 and root.name in latest.stdout
    followed = cli.run("tail", "--json")
    assert followed.returncode == 0, followed.stderr
    assert [json.loads(line)["seq"] for line in followed.stdout.splitlines()] == [e.seq for e in events]


def test_each_champion_is_measured_on_the_test_set_and_the_end_leaves_listening_samples(cli: Cli) -> None:
    with_test = TINY_RUN.replace("heartbeat_s: 0.5}", "heartbeat_s: 0.5, test_dataset: data/tiny-corpus}")
    result = cli.run("run", "--config", cli.write_config("tested.yaml", with_test))
    assert result.returncode == 0, result.stderr
    root = only_run(cli)
    events = cli.events(root)
    tested = [e for e in events if isinstance(e.data, m.ChampionTested)]
    promoted = [e for e in events if isinstance(e.data, m.ChampionPromoted)]
    # every champion is measured or replaced by a later one while it waits; the last one is the final
    assert tested and all(t.data.error is None and t.data.n_sentences == 12 for t in tested)
    assert [t.data.final for t in tested].count(True) == 1 and tested[-1].data.final
    assert {t.cause for t in tested} <= {e.id for e in events}
    assert tested[-1].data.segment_id == promoted[-1].data.segment_id
    finished = events[-1]
    assert isinstance(finished.data, m.RunFinished) and finished.seq > tested[-1].seq  # the end waited for it
    (hello,) = [e.data for e in events if isinstance(e.data, m.WorkerHello)]
    env = hello.environment  # what the numbers depend on, on record: torch, threads, CPU, the data and its audio
    assert env["threads"] == 1 and env["torch"] and env["cpu"] and env["dataset_id"] and len(env["audio_sha256"]) == 64
    assert finished.data.summary["test_objective"] == tested[-1].data.metrics["val_objective"]
    samples = root / "samples"
    assert tested[-1].data.samples == f"runs/{root.name}/samples"
    listing = json.loads((samples / "samples.json").read_text())
    assert len(listing) == 12 and all((samples / entry["wav"]).is_file() for entry in listing)
    metrics = json.loads((samples / "test_metrics.json").read_text())
    assert {"val_objective", "fr_gate_stop_rate", "fr_mcd_dtw"} <= set(metrics)
    assert metrics["val_objective"] == tested[-1].data.metrics["val_objective"]
    assert "on the test set (data/tiny-corpus: 12 sentences no decision saw): objective " in result.stdout
    assert f"listening samples: runs/{root.name}/samples/ (12 WAVs" in result.stdout
    timeline = cli.run("replay", root, "--timeline")
    assert "on the test set (data/tiny-corpus, 12 sentences; final, with listening samples)" in timeline.stdout
    assert cli.run("replay", root, "--verify").returncode == 0
    # ... and in the projections: MLflow's parent run, TensorBoard's test/ (scalars and audio)
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    client = MlflowClient(tracking_uri=f"sqlite:///{(root / 'mlflow.db').resolve()}")
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("smart-tuner").experiment_id], "tags.`smart_tuner.kind` = 'parent'"
    )
    assert parent.data.metrics["test_val_objective"] == pytest.approx(metrics["val_objective"])
    history = client.get_metric_history(parent.info.run_id, "test_val_objective")
    assert [h.step for h in history] == [t.data.step for t in tested]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "samples")}
    assert {"samples/samples.json", "samples/test_metrics.json"} <= artifacts and len(artifacts) == 14
    board = EventAccumulator(str(root / "tensorboard" / "test"), size_guidance={"audio": 0}).Reload()
    assert len(board.Tags()["audio"]) == 12 and "fr_gate_stop_rate" in board.Tags()["scalars"]

    broken = with_test.replace("test_dataset: data/tiny-corpus", "test_dataset: data/no-such-corpus")
    again = cli.run("run", "--config", cli.write_config("broken.yaml", broken), "--run-dir", "runs/broken")
    assert again.returncode == 0  # the run's result stands; the test set's problem is named
    assert "on the test set (data/no-such-corpus): not measured: the evaluator exited 2: heldout: error:" in (
        again.stdout
    )
    assert "no-such-corpus" in again.stdout and "Traceback" not in again.stderr + again.stdout
    failed = [e.data for e in cli.events(cli.cwd / "runs/broken") if isinstance(e.data, m.ChampionTested)]
    assert failed and all(t.error and not t.metrics for t in failed)


# --- 2. tail in another process: no gap, no duplicate -------------------------------------


def test_tail_follows_a_live_run_without_gap_or_duplicate(cli: Cli) -> None:
    config = cli.write_config("keepalive.yaml", KEEPALIVE)
    coordinator = cli.spawn("coordinator", "run", "--config", config, "--run-dir", "runs/live")
    root = cli.cwd / "runs/live"
    cli.wait_until(lambda: "RunStarted" in cli.types(root), "RunStarted is recorded", proc=coordinator)

    tail = cli.spawn("tail", "tail", root, "--json")
    cli.wait_until(lambda: tail.stdout().startswith('{"seq":1,'), "tail printed the recorded events", proc=tail)

    titles = [f"n{i}" for i in range(N_ALERTS)]
    seqs = propose_alerts(root / "bus", titles)
    assert seqs == sorted(seqs) and len(set(seqs)) == N_ALERTS

    stop = cli.run("stop", root, "--reason", "e2e")
    assert stop.returncode == 0, stop.stderr
    assert "run finished: stopped" in stop.stdout
    assert coordinator.wait() == 0, coordinator.output()
    assert tail.wait() == 0, tail.output()  # ends by itself after RunFinished

    events = cli.events(root)
    lines = [json.loads(line) for line in tail.stdout().splitlines()]
    assert [doc["seq"] for doc in lines] == list(range(1, events[-1].seq + 1))
    assert [(doc["seq"], doc["id"], doc["type"]) for doc in lines] == [(e.seq, e.id, e.type) for e in events]
    assert [doc["data"]["title"] for doc in lines if doc["type"] == "AlertSent"] == titles
    assert [doc["seq"] for doc in lines if doc["type"] == "AlertSent"] == seqs
    assert "RunFinished" in {doc["type"] for doc in lines}

    # a filtered, bounded read of the same log
    k = seqs[100]
    filtered = cli.run("tail", root, "--from-seq", str(k), "--type", "Alert*", "--no-follow", "--json")
    assert filtered.returncode == 0, filtered.stderr
    expected = [(e.seq, e.id) for e in events if e.seq >= k and e.type == "AlertSent"]
    assert len(expected) == N_ALERTS - 100
    assert [(doc["seq"], doc["id"]) for doc in map(json.loads, filtered.stdout.splitlines())] == expected


def test_the_dashboard_of_a_live_run_shows_it_and_its_stop_button_stops_it(cli: Cli) -> None:
    """``run --dashboard``: the address printed with its token serves the live run; the page's own
    stop request (token, CSRF) ends it gracefully, like ``stop``."""
    import urllib.request

    config = cli.write_config("keepalive.yaml", KEEPALIVE)
    coordinator = cli.spawn(
        "coordinator", "run", "--config", config, "--run-dir", "runs/live", "--dashboard", "--dashboard-port", "0"
    )
    root = cli.cwd / "runs/live"
    cli.wait_until(lambda: ready_since(cli, root), "the actors are ready", proc=coordinator)
    found = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)\?token=(\S+)", coordinator.stderr())
    assert found, coordinator.stderr()
    base, token = found.groups()

    def get(path: str, **headers: str) -> tuple[int, bytes]:
        request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    cli.wait_until(lambda: get("api/state")[0] == 200, "the dashboard answers", proc=coordinator)
    state = json.loads(get("api/state")[1])
    assert state["running"] is True and state["overview"]["run_id"] == "live"
    cli.wait_until(lambda: json.loads(get("api/state")[1])["lineage"]["nodes"], "the first segment is shown")
    csrf = json.loads(get("api/session")[1])["csrf"]
    stop = urllib.request.Request(
        base + "api/stop",
        data=json.dumps({"reason": "from the dashboard test"}).encode(),
        headers={"Authorization": f"Bearer {token}", "X-CSRF-Token": csrf, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(stop, timeout=30) as response:
        assert response.status == 200 and json.loads(response.read())["seq"] > 0
    assert coordinator.wait() == 0, coordinator.output()
    requests = [e.data for e in cli.events(root) if isinstance(e.data, m.StopRequested)]
    assert [r.reason for r in requests] == ["from the dashboard test"] and requests[0].source.startswith("dashboard")
    assert "the dashboard after the run: python run_tuner.py dashboard" in coordinator.stderr()


def test_what_if_shows_where_other_settings_part_and_fork_from_trains_them_leaving_the_run_untouched(
    cli: Cli,
) -> None:
    import hashlib

    assert cli.run("run", "--config", cli.write_config("tiny.yaml", TINY_RUN), "--run-dir", "runs/a").returncode == 0
    root = cli.cwd / "runs/a"
    before = hashlib.sha256((root / "events.log").read_bytes()).hexdigest()
    from smart_tuner.state.journal import FileJournal
    from smart_tuner.state.snapshot import latest_snapshot_at

    snapshot, offset = latest_snapshot_at(root / "snapshots")  # type: ignore[misc]
    journal = FileJournal.open_readonly(root / "events.log")
    assert offset is not None and offset == journal.offset_of(snapshot.last_seq + 1)  # where a reader continues
    journal.close()

    same = cli.run("replay", root, "--what-if", "forks.margin=0.02")  # the recorded setting: nothing differs
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no difference over the" in same.stdout and "note:" not in same.stdout
    other = cli.run("replay", root, "--what-if", "forks.probe_steps=4")
    assert other.returncode == 1, other.stdout + other.stderr
    assert "first difference: after event #" in other.stdout and "past this point nothing was observed" in other.stdout
    for bad, named in (("forks.margin=-1", "forks.margin"), ("forks.margin", "expected KEY=VALUE")):
        refused = cli.run("replay", root, "--what-if", bad)
        assert refused.returncode == 2 and named in refused.stderr and "Traceback" not in refused.stderr

    champion = state_yaml(root)["tuning"]["champion"]  # type: ignore[index]
    segment = champion["segment_id"]
    fork = cli.run("run", "--fork-from", f"{root}:{segment}", "--set", "forks.margin=0.9", "--run-dir", "runs/b")
    assert fork.returncode == 0, fork.stderr
    assert hashlib.sha256((root / "events.log").read_bytes()).hexdigest() == before  # history untouched
    events = cli.events(cli.cwd / "runs/b")
    started = events[0].data
    assert isinstance(started, m.RunStarted)
    assert started.config["forked_from"] == f"{root.resolve()}:{segment}"
    assert started.config["forks"]["margin"] == 0.9
    assert Path(started.config["resume_from_checkpoint"]).name == Path(champion["checkpoint"]).name
    first = next(e.data for e in events if isinstance(e.data, m.SegmentScheduled))
    assert first.from_checkpoint == started.config["resume_from_checkpoint"]
    assert dict(first.hparams)["learning_rate"] == champion["hparams"]["learning_rate"]
    assert 0 < started.config["budget"]["max_steps"] < 40  # the rest of the old run's budget

    for args, message in (
        (["--fork-from", f"{root}:nope"], "has no segment 'nope'"),
        (["--fork-from", "runs/a"], "expected RUN_DIR:SEGMENT"),
        (["--set", "forks.margin=0.5"], "use it with --fork-from"),
    ):
        refused = cli.run("run", *args, "--run-dir", "runs/c")
        assert refused.returncode == 2 and message in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr and not (cli.cwd / "runs/c").exists()


# --- 3. graceful shutdown on a signal -------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_run_gracefully(cli: Cli, sig: signal.Signals) -> None:
    coordinator, root = start_keepalive(cli)
    endpoints = json.loads((root / "bus" / "endpoints.json").read_text())
    assert endpoints["pid"] == coordinator.pid

    os.kill(coordinator.pid, sig)
    assert coordinator.wait() == 0, coordinator.output()

    events = cli.events(root)
    requested, decided, finished = (e.data for e in events[-3:])
    assert isinstance(requested, m.StopRequested) and sig.name in requested.source
    assert isinstance(decided, m.StopDecided) and decided.rule == "operator"
    assert isinstance(finished, m.RunFinished) and finished.status == "stopped"
    assert f"Run live: stopped - stop requested by signal {sig.name}" in coordinator.stdout()

    state = state_yaml(root)
    assert state["last_seq"] == events[-1].seq
    assert state["control"]["phase"] == "finished"  # type: ignore[index]
    assert not writer_active(root / "events.log")
    assert_verifies(cli, root)


# --- 4. resume, and the refusals around it ---------------------------------------------------


def test_resume_a_stopped_run_and_refuse_what_would_break_it(cli: Cli) -> None:
    first, root = start_keepalive(cli)
    assert cli.run("stop", root).returncode == 0
    assert first.wait() == 0, first.output()
    head = cli.events(root)[-1].seq

    # another config: refused, and the log is untouched
    other = cli.write_config("other.yaml", "strategy: none\nseed: 7\n")
    before = (root / "events.log").read_bytes()
    refused = cli.run("run", "--resume", "--run-dir", root, "--config", other)
    assert refused.returncode == 2
    assert "was started with config" in refused.stderr and str(root / "config.yaml") in refused.stderr
    assert (root / "events.log").read_bytes() == before

    # the recorded config: no --config needed
    resumed = cli.spawn("resumed", "run", "--resume", "--run-dir", root)
    cli.wait_until(lambda: ready_since(cli, root, head), "both actors ready after the resume", proc=resumed)
    resumed_event = cli.events(root)[head]  # seq head + 1
    assert isinstance(resumed_event.data, m.RunResumed)
    assert resumed_event.data.head_seq == head and resumed_event.data.pid == resumed.pid

    def rerun_started() -> bool:  # the segment the stop interrupted trains again: under its own id if its
        # end never reached the log, else (recorded as aborted) under a new one
        return any(
            isinstance(e.data, m.SegmentStarted) and e.seq > head and e.data.segment_id in ("r0-t0-g0", "r0-t0-g0-re1")
            for e in cli.events(root)
        )

    cli.wait_until(rerun_started, "the interrupted segment trains again", proc=resumed)

    # one coordinator per run
    second = cli.run("run", "--resume", "--run-dir", root)
    assert second.returncode == 2
    assert "another coordinator is running" in second.stderr
    fresh = cli.run("run", "--config", cli.cwd / "keepalive.yaml", "--run-dir", root)
    assert fresh.returncode == 2
    assert "already holds a run" in fresh.stderr
    salvage = cli.run("salvage", root)
    assert salvage.returncode == 2 and "a coordinator is running" in salvage.stderr
    status = cli.run("status", root)
    assert status.returncode == 0
    assert f"coordinator RUNNING (pid {resumed.pid})" in status.stdout
    assert re.search(r"^phase\s+running", status.stdout, re.MULTILINE)

    stop = cli.run("stop", root)
    assert stop.returncode == 0, stop.stderr
    assert resumed.wait() == 0, resumed.output()
    control = state_yaml(root)["control"]
    assert isinstance(control, dict)
    assert control["resumes"] == 1 and control["phase"] == "finished" and control["status"] == "stopped"
    assert [e.type for e in cli.events(root)].count("RunFinished") == 2
    assert_verifies(cli, root)


# --- 5. kill -9, then resume -------------------------------------------------------------------


def test_kill_9_mid_run_then_resume(cli: Cli) -> None:
    coordinator, root = start_keepalive(cli)
    titles = [f"before-kill-{i}" for i in range(20)]
    acked = propose_alerts(root / "bus", titles)
    cli.wait_until((root / "tuner_state.yaml").is_file, "tuner_state.yaml is written", proc=coordinator)

    os.killpg(coordinator.pid, signal.SIGKILL)
    assert coordinator.wait() == -signal.SIGKILL
    assert not writer_active(root / "events.log")  # the kernel released the lock

    events = cli.events(root)
    head = events[-1].seq
    recorded = {e.seq: e.data.title for e in events if isinstance(e.data, m.AlertSent)}
    assert recorded == dict(zip(acked, titles, strict=True))  # every acknowledged event survived
    assert "RunFinished" not in {e.type for e in events}
    assert_verifies(cli, root)  # the YAML may lag the log; what it holds is still a true prefix

    resumed = cli.spawn("resumed", "run", "--resume", "--run-dir", root)
    cli.wait_until(lambda: ready_since(cli, root, head), "both actors ready after the resume", proc=resumed)
    resumed_event = cli.events(root)[head]
    assert isinstance(resumed_event.data, m.RunResumed)
    assert resumed_event.seq == head + 1 and resumed_event.data.head_seq == head

    assert cli.run("stop", root, "--reason", "after the crash").returncode == 0
    assert resumed.wait() == 0, resumed.output()
    finished = cli.events(root)[-1].data
    assert isinstance(finished, m.RunFinished) and finished.status == "stopped"
    assert "after the crash" in finished.reason
    assert state_yaml(root)["control"]["resumes"] == 1  # type: ignore[index]
    assert_verifies(cli, root)


# --- 6. config errors are refused before anything is created ----------------------------------


BAD_CONFIGS = {
    "unknown-key": ("strategy: none\nbogus_key: 1\n", ["bogus_key", "Extra inputs are not permitted"]),
    "loguniform-low": (
        "strategy: none\nsearch_space:\n  learning_rate:\n    type: loguniform\n    low: -1\n    high: 0.1\n",
        ["search_space.learning_rate", "low > 0", "low=-1"],
    ),
    "yaml-syntax": ("strategy: none\nseed: 0\n  n_gpus: 0\n", ["YAML error at line 3"]),
    "missing-env": ('alerts:\n  urls: ["${ST_E2E_NOT_SET}"]\n', ["alerts.urls[0]", "ST_E2E_NOT_SET", "not set"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_refused_naming_the_key(cli: Cli, case: str) -> None:
    text, expected = BAD_CONFIGS[case]
    config = cli.write_config("bad.yaml", text)
    result = cli.run("run", "--config", config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {config}: ")
    for fragment in expected:
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert not (cli.cwd / "runs").exists()


# --- 7. commands on runs that are not running, or not runs ------------------------------------


def test_commands_on_a_stopped_run_or_no_run(cli: Cli) -> None:
    no_runs = cli.run("status")
    assert no_runs.returncode == 2 and "no runs under runs/" in no_runs.stderr

    assert cli.run("run", "--config", cli.write_config("tiny.yaml", TINY_RUN)).returncode == 0
    root = only_run(cli)
    stop = cli.run("stop", root)
    assert stop.returncode == 2
    assert "no coordinator is running" in stop.stderr
    status = cli.run("status", root)
    assert status.returncode == 0
    assert re.search(r"^coordinator not running", status.stdout, re.MULTILINE), status.stdout

    (cli.cwd / "not_a_run").mkdir()
    (cli.cwd / "not_a_run" / "notes.txt").write_text("hello\n")
    for command in (
        ["tail", "not_a_run"],
        ["tail", "not_a_run", "--no-follow"],
        ["replay", "not_a_run"],
        ["status", "not_a_run"],
        ["stop", "not_a_run"],
        ["salvage", "not_a_run"],
        ["dashboard", "not_a_run"],
    ):
        result = cli.run(*command)
        assert result.returncode == 2, command
        assert "not_a_run: not a run directory" in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(cli: Cli, command: str) -> None:
    result = cli.run(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: run_tuner.py {command}")
    assert "--help" in result.stdout
    assert not (cli.cwd / "runs").exists()


def test_top_level_help_lists_every_command(cli: Cli) -> None:
    result = cli.run("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


# --- 8. secrets ----------------------------------------------------------------------------------


def test_secret_from_the_environment_never_reaches_disk_or_console(cli: Cli) -> None:
    config = cli.write_config("secret.yaml", TINY_RUN + 'alerts:\n  urls: ["${' + SECRET_ENV + '}"]\n')
    result = cli.run("run", "--config", config, "--log-level", "debug", env={SECRET_ENV: SECRET_URL})
    assert result.returncode == 0, result.stderr
    root = only_run(cli)

    files = [p for p in (cli.cwd / "runs").rglob("*") if p.is_file()]
    assert {root / "events.log", root / "tuner_state.yaml", root / "config.yaml"} <= set(files)
    assert any(p.parent == root / "logs" for p in files)
    for path in files:
        data = path.read_bytes()
        assert b"SECRET_TOKEN_123" not in data, path
    assert "SECRET_TOKEN_123" not in result.stdout + result.stderr

    template = "${" + SECRET_ENV + "}"
    assert template in (root / "config.yaml").read_text()
    started = cli.events(root)[0].data
    assert isinstance(started, m.RunStarted)
    assert list(started.config["alerts"]["urls"]) == [template]  # type: ignore[index,call-overload]


# --- 9. salvage a damaged journal --------------------------------------------------------------


def record_offsets(data: bytes) -> list[tuple[int, int]]:
    """``(offset, length)`` of each record's payload in a journal file."""
    offsets, pos = [], len(MAGIC)
    while pos < len(data):
        length, _ = FRAME.unpack_from(data, pos)
        offsets.append((pos + FRAME.size, length))
        pos += FRAME.size + length
    return offsets


def test_salvage_cuts_a_damaged_log_and_keeps_the_damaged_copy(cli: Cli) -> None:
    assert cli.run("run", "--config", cli.write_config("tiny.yaml", TINY_RUN)).returncode == 0
    root = only_run(cli)
    journal = root / "events.log"
    healthy = cli.run("salvage", root)
    assert healthy.returncode == 0 and "no damage found" in healthy.stdout

    original = journal.read_bytes()
    records = record_offsets(original)
    assert len(records) >= 4
    offset, length = records[1]  # seq 2, with valid records after it
    damaged = bytearray(original)
    damaged[offset + length // 2] ^= 0xFF
    journal.write_bytes(bytes(damaged))

    for command in (["replay", root, "--verify"], ["status", root], ["replay", root]):
        result = cli.run(*command)
        assert result.returncode == 2, (command, result.stdout)
        assert "corrupt record" in result.stderr and "salvage" in result.stderr, result.stderr

    salvaged = cli.run("salvage", root)
    assert salvaged.returncode == 0, salvaged.stderr
    assert "cut the log after seq 1" in salvaged.stdout
    assert f"run --resume --run-dir {root}" in salvaged.stdout
    kept = list(root.glob("salvaged-*/events.log"))
    assert len(kept) == 1
    assert kept[0].read_bytes() == bytes(damaged)
    assert journal.read_bytes() == original[: offset - FRAME.size]  # everything before the damaged record
    assert (kept[0].parent / "tuner_state.yaml").is_file()  # it described events after the cut: moved aside
    assert not (root / "tuner_state.yaml").exists()

    replay = cli.run("replay", root)
    assert replay.returncode == 0, replay.stderr
    assert yaml.safe_load(replay.stdout)["last_seq"] == 1

    resumed = cli.run("run", "--resume", "--run-dir", root)
    assert resumed.returncode == 0, resumed.stderr
    events = cli.events(root)
    assert isinstance(events[1].data, m.RunResumed) and events[1].data.head_seq == 1
    assert f"Run {root.name}: completed" in resumed.stdout
    assert [e.type for e in events[:2]] == ["RunStarted", "RunResumed"]
    finished = [e.data for e in events if isinstance(e.data, m.RunFinished)]
    assert len(finished) == 1 and finished[0].status == "completed"
    assert_verifies(cli, root)
