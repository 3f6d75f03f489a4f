"""The coordinator: one asyncio loop hosting the journal and every actor.

``Coordinator(paths, config, resume=...).run()`` opens (or creates) the run's
journal under an exclusive lock, folds it into the state, binds the bus,
starts the sequencer, records ``RunStarted`` or ``RunResumed``, starts the
actors under supervision and waits for them to be ready, then waits for the
run to end: ``RunFinished`` committed, an operator's stop (``stop`` command,
SIGINT/SIGTERM), or an actor that gave up. Shutdown is graceful: actors are
stopped (teardown drains them), the sequencer commits what is queued, the
final ``tuner_state.yaml`` and a snapshot are written, sockets are closed with
their linger, and the journal lock is released. A second signal skips the
wait for the actors but still flushes the journal.

Never imports torch or the model. Imports asyncio, ``protocol``, ``state``
and the actors package only.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import SecretStr

from ..protocol import Envelope
from ..protocol import messages as m
from ..state import history
from ..state.config import LoadedConfig
from ..state.journal import FileJournal
from ..state.model import TunerState
from ..state.reducers import ReducerError
from .alerter import AlertChannels, Alerter
from .bus import BusError
from .bus.zmqbus import (
    CURVE_ENV,
    BusEndpoints,
    CurveServer,
    SocketOptions,
    WorkerServer,
    ZmqClient,
    ZmqSequencerPort,
    curve_public,
    curve_server_with_local_client,
    ipc_endpoints,
    new_context,
)
from .guards import GuardRails
from .lifecycle import Lifecycle
from .projections.projector import Projector
from .projections.terminal import LiveView
from .rundir import RunPaths
from .runtime import ActorCore, ActorShell, RestartPolicy, supervise
from .sequencer import Sequencer, SequencerSettings
from .stopper import Stopper
from .supervisor.core import Supervisor, SupervisorIO, SupervisorPolicy
from .supervisor.devices import DevicePool, Lease
from .supervisor.launcher import EXTERNAL_SPEC_ENV, WorkerSpec, worker_command
from .tester import ChampionTester, ChampionTesterIO, held_out_set
from .tuner import STRATEGIES, Tuner

log = structlog.get_logger("coordinator")

VERSION = "0.1.0"
AVAILABLE_STRATEGIES = STRATEGIES  # a strategy not among them ends the run as "nothing to tune"
FINISH_GRACE_S = 15.0  # after a stop decision, how long the actors get to record RunFinished


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


class RunError(Exception):
    """The run cannot start or continue as asked (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    state: TunerState
    exit_code: int


class Coordinator:
    def __init__(self, paths: RunPaths, config: LoadedConfig, *, resume: bool) -> None:
        self.paths = paths
        self.config = config
        self.resume = resume
        self.test_set = held_out_set(config.resolved)
        self.cores: list[ActorCore] = [
            Lifecycle(awaits_test=self.test_set is not None),
            Stopper(available_strategies=AVAILABLE_STRATEGIES),
            Tuner(),
            GuardRails(),
            Projector(paths.root, optuna_storage=_secret(config.resolved.optuna_storage)),
            Alerter(
                AlertChannels(
                    [u.get_secret_value() for u in config.resolved.alerts.urls],
                    min_severity=config.resolved.alerts.min_severity,
                    rate_limit_per_min=config.resolved.alerts.rate_limit_per_min,
                )
            ),
        ]
        self._finished = asyncio.Event()
        self._stop_requested: str | None = None
        self._give_up: str | None = None
        self._wake = asyncio.Event()
        self._force = False
        self._curve, self._curve_env = self._setup_curve()

    # --- entry point -----------------------------------------------------------------

    async def run(self) -> Outcome:
        journal = self._open_journal()
        try:
            state = history.load(journal, snapshots=self.paths.snapshots)
            self._check_start(state)
            ctx = new_context()
            try:
                return await self._run_with(journal, state, ctx)
            finally:
                ctx.term()
        finally:
            journal.close()

    def _open_journal(self) -> FileJournal:
        exists = self.paths.journal.exists()
        if self.resume and not exists:
            raise RunError(f"{self.paths.root}: nothing to resume (no events.log)")
        if not self.resume and exists and self.paths.journal.stat().st_size > 0:
            raise RunError(f"{self.paths.root} already holds a run; resume it with --resume or pick another --run-dir")
        self.paths.create()
        from ..state.journal import JournalLocked

        try:
            journal = FileJournal.open(self.paths.journal, fsync=self.config.raw.journal.fsync)
        except JournalLocked:
            raise RunError(f"{self.paths.root}: another coordinator is running this run (see `status`)") from None
        if journal.recovery.truncated_bytes:
            log.warning("torn tail truncated", bytes=journal.recovery.truncated_bytes, last_seq=journal.last_seq)
        return journal

    def _check_start(self, state: TunerState) -> None:
        if state.run is not None and state.run.config_hash != self.config.config_hash:
            raise RunError(
                f"{self.paths.root} was started with config {state.run.config_hash[:12]}, not "
                f"{self.config.config_hash[:12]}; resume it with the config recorded in {self.paths.config}"
            )

    # --- the run ----------------------------------------------------------------------

    async def _run_with(self, journal: FileJournal, state: TunerState, ctx: object) -> Outcome:
        cfg = self.config.raw
        opts = SocketOptions(linger_ms=cfg.bus.linger_ms, hwm=cfg.bus.hwm, max_message_bytes=cfg.bus.max_message_bytes)
        endpoints = self._endpoints()
        port = ZmqSequencerPort(ctx, endpoints, opts)  # type: ignore[arg-type]
        endpoints = port.endpoints
        endpoints.write(self.paths.bus)
        settings = SequencerSettings(
            group_commit_max=cfg.journal.group_commit_max,
            state_write_interval_s=cfg.journal.state_write_interval_s,
            snapshot_every=cfg.journal.snapshot_every,
            state_path=self.paths.state,
            snapshot_dir=self.paths.snapshots,
        )
        sequencer = Sequencer(journal, port, state, settings)
        sequencer.on_commit(self._on_commit)
        view = LiveView(lambda: sequencer.state, self.config.raw.budget.max_steps)
        sequencer.on_commit(view.on_commit)
        clients: list[ZmqClient] = []
        for core in self.cores:
            if isinstance(core, Alerter):
                alerts = ZmqClient(ctx, endpoints, opts, subscribe=False)  # type: ignore[arg-type]
                core.client = alerts
                clients.append(alerts)
        server = WorkerServer(ctx, endpoints.workers, opts, curve=self._curve)  # type: ignore[arg-type]
        self.cores.append(self._supervisor(server, ZmqClient(ctx, endpoints, opts), clients))  # type: ignore[arg-type]
        if self.test_set is not None:
            tests = ZmqClient(ctx, endpoints, opts, subscribe=False)  # type: ignore[arg-type]
            clients.append(tests)
            self.cores.append(ChampionTester(ChampionTesterIO(tests, self.paths.root, self.test_set)))
        try:
            async with asyncio.TaskGroup() as tg:
                seq_task = tg.create_task(sequencer.run(), name="sequencer")
                await sequencer.ready.wait()
                await self._record_start(sequencer)
                view.start()
                actor_tasks = self._start_actors(tg, sequencer, ctx, endpoints, opts, clients)
                self._install_signals()
                await self._wait_for_end(sequencer)
                for task in actor_tasks:
                    task.cancel()
                await asyncio.gather(*actor_tasks, return_exceptions=True)
                sequencer.stop()
                await seq_task
        finally:
            view.stop()
            self._remove_signals()
            for client in clients:
                await client.aclose()
            await server.aclose()
            await port.aclose()
        final = sequencer.state
        code = 1 if final.control.status == "failed" else (0 if final.control.phase == "finished" else 130)
        return Outcome(final, code)

    def _supervisor(self, server: WorkerServer, client: ZmqClient, clients: list[ZmqClient]) -> Supervisor:
        clients.append(client)
        cfg = self.config.resolved
        t = cfg.trainer
        hparams = ",".join(f"{k}={v}" for k, v in t.hparams.items())
        env = self._curve_env
        if cfg.external is not None:  # the user's script: its section travels in the environment (secrets)
            env = (*env, (EXTERNAL_SPEC_ENV, cfg.external.model_dump_json()))
        spec = WorkerSpec(
            dataset=t.dataset,
            preset=t.preset,
            output_dir=self.paths.root / ("external" if cfg.external else "trainer"),
            data_dir=Path(t.data_dir) if t.data_dir else None,
            threads=t.threads,
            val_count=t.val_count,
            test_count=t.test_count,
            heartbeat_s=t.heartbeat_s,
            hparams=hparams,
            env=env,
            external=cfg.external is not None,
            ranks=t.ddp_ranks,
        )
        policy = SupervisorPolicy(heartbeat_timeout_s=t.heartbeat_timeout_s, max_attempts=t.max_attempts)
        pool = DevicePool.create(cfg.n_gpus, visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
        io = SupervisorIO(server, pool, spec, client, self.paths.root, policy)
        io.accept_remote = self._curve is not None  # only behind CURVE and the allow-list: no key, no entry
        if self._curve is not None and cfg.external is None:  # the command a person runs on another host
            public = curve_public(cfg.bus.curve_server_secret)  # type: ignore[arg-type]
            argv = worker_command(spec, server.endpoint, "NAME", Lease("NAME", ("0",)))
            argv[argv.index("--parent-pid") + 1] = "0"  # no supervisor process on that host
            argv[0] = "python"
            argv += ["--curve-server-key", public, "--curve-key-file", "NAME.key_secret"]
            log.info(
                "remote workers may join (the same paths on a shared filesystem)",
                endpoint=server.endpoint,
                server_key=public,
                command=shlex.join(argv),
            )
        return Supervisor(io)

    def _endpoints(self) -> BusEndpoints:
        """ipc sockets in the run directory; with tcp only the worker channel listens on ``bus.host``
        (CURVE-encrypted off the loopback): proposals and the event feed stay on 127.0.0.1."""
        bus = self.config.raw.bus
        if bus.transport == "tcp":
            local = "tcp://127.0.0.1:0"
            return BusEndpoints(propose=local, publish=local, workers=f"tcp://{bus.host}:{bus.worker_port}")
        return ipc_endpoints(self.paths.bus)

    def _setup_curve(self) -> tuple[CurveServer | None, tuple[tuple[str, str], ...]]:
        """The worker channel's CURVE server (from ``bus.curve_server_secret``) and the environment
        that lets local workers in: a key pair made for this coordinator only, kept in memory."""
        bus = self.config.resolved.bus
        if bus.transport != "tcp" or bus.curve_server_secret is None:
            return None, ()
        allow = frozenset(k.encode() for k in bus.allow_keys)
        try:
            server, local = curve_server_with_local_client(bus.curve_server_secret.encode(), allow)
        except BusError as exc:
            raise RunError(f"bus.curve_server_secret: {exc}") from None
        keys = (local.server_key.decode(), local.public_key.decode(), local.secret_key.decode())
        log.info("worker channel encrypted (CURVE)", host=bus.host, allowed_keys=len(server.allow))
        return server, tuple(zip(CURVE_ENV, keys, strict=True))

    async def _record_start(self, sequencer: Sequencer) -> None:
        state = sequencer.state
        if state.run is None:
            cfg = self.config
            started = m.RunStarted(
                run_id=self.paths.run_id,
                config_hash=cfg.config_hash,
                config=cfg.recordable(),
                strategy=cfg.raw.strategy,
                seed=cfg.raw.seed,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=VERSION,
            )
            await sequencer.propose_local(started, actor="coordinator")
        else:
            resumed = m.RunResumed(
                run_id=state.run.run_id,
                head_seq=state.last_seq,
                pid=os.getpid(),
                host=socket.gethostname(),
                truncated_bytes=sequencer.journal.recovery.truncated_bytes,  # type: ignore[attr-defined]
            )
            await sequencer.propose_local(resumed, actor="coordinator")

    def _start_actors(
        self,
        tg: asyncio.TaskGroup,
        sequencer: Sequencer,
        ctx: object,
        endpoints: BusEndpoints,
        opts: SocketOptions,
        clients: list[ZmqClient],
    ) -> list[asyncio.Task[None]]:
        tasks = []
        for core in self.cores:
            client = ZmqClient(ctx, endpoints, opts)  # type: ignore[arg-type]
            clients.append(client)

            def make_shell(core: ActorCore = core, client: ZmqClient = client) -> ActorShell:
                start = None if core.replays_history else sequencer.state
                return ActorShell(core, client, sequencer.journal, start=start)

            async def report(event: m.ActorCrashed) -> None:
                await sequencer.propose_local(event, actor="coordinator")

            task = tg.create_task(
                supervise(core.name, make_shell, lambda: None, report, self._on_give_up, RestartPolicy()),
                name=f"actor:{core.name}",
            )
            tasks.append(task)
        return tasks

    # --- how a run ends ------------------------------------------------------------------

    def _on_commit(self, env: Envelope) -> None:
        if isinstance(env.data, m.RunFinished):
            self._finished.set()
            self._wake.set()

    def _on_give_up(self, reason: str) -> None:
        self._give_up = reason
        self._wake.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig.name)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    def _on_signal(self, name: str) -> None:
        if self._stop_requested is None:
            self._stop_requested = name
            log.warning("stopping gracefully; send the signal again to skip waiting for the actors", signal=name)
        else:
            self._force = True
        self._wake.set()

    async def _wait_for_end(self, sequencer: Sequencer) -> None:
        asked = False
        while not self._finished.is_set():
            await self._wake.wait()
            self._wake.clear()
            if self._force:
                log.warning("forced stop: the run stays resumable", last_seq=sequencer.state.last_seq)
                return
            if self._give_up is not None and not asked:
                asked = True
                await self._decide(sequencer, "actor_failure", self._give_up, {"error": self._give_up})
            elif self._stop_requested is not None and not asked:
                asked = True
                request = m.StopRequested(source=f"signal {self._stop_requested}", reason="operator interrupt")
                await sequencer.propose_local(request, actor="coordinator")
                asyncio.get_running_loop().call_later(FINISH_GRACE_S, self._wake.set)
            elif asked and not self._finished.is_set():
                await self._finish_without_actors(sequencer)

    async def _decide(self, sequencer: Sequencer, rule: str, reason: str, evidence: dict[str, object]) -> None:
        if sequencer.state.control.phase == "running":
            decided = m.StopDecided(rule=rule, reason=reason, evidence=evidence)
            try:
                await sequencer.propose_local(decided, actor="coordinator")
            except ReducerError as exc:  # a race with the stopper, which decided first
                log.info("stop decision not recorded", error=str(exc))
        asyncio.get_running_loop().call_later(FINISH_GRACE_S, self._wake.set)

    async def _finish_without_actors(self, sequencer: Sequencer) -> None:
        """The actors did not finish the run in time: record the end ourselves."""
        state = sequencer.state
        if state.control.phase == "running":
            reason = self._give_up or f"stop requested by signal {self._stop_requested}"
            await self._decide(sequencer, "actor_failure" if self._give_up else "operator", reason, {})
            state = sequencer.state
        if state.control.phase == "stopping" and state.control.stop is not None:
            from .lifecycle import run_status, summarize

            finished = m.RunFinished(
                status=run_status(state.control.stop.rule), reason=state.control.stop.reason, summary=summarize(state)
            )
            await sequencer.propose_local(finished, actor="coordinator")


def run_coordinator(paths: RunPaths, config: LoadedConfig, *, resume: bool) -> Outcome:
    """Run the coordinator to the end in a fresh event loop."""
    return asyncio.run(Coordinator(paths, config, resume=resume).run())
