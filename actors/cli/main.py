"""The command line: ``run`` (default), ``tail``, ``replay``, ``status``, ``stop``, ``salvage``.

``python run_tuner.py`` and the ``smart-tuner`` console script both call
``main``. Every subcommand has ``--help``; bad input (arguments, config files,
run directories) ends with one clear message naming the problem and exit code
2, before anything is written. The only module allowed to ``print``, with
``tools``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...state.config import QUICK, ConfigError, LoadedConfig, load_config, with_overrides
from ...state.journal import JournalError, writer_active
from ..rundir import RUNS_DIR, RunPaths, latest_run, new_run_id, resolve_run_dir
from ..watcher.probe import ProbeError
from . import commands as tools

COMMANDS = ("run", "tail", "replay", "status", "stop", "salvage", "probe", "keys", "dashboard")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_tuner.py",
        description="Smart Tuner: tunes a TTS training run by itself and records every decision.",
        epilog="With no command, `run` is assumed: `python run_tuner.py` tunes the bundled demo.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="start (or --resume) a tuning run", description="Start or resume a tuning run.")
    run.add_argument(
        "--run-dir", type=Path, help="run directory (default: runs/<new run id>; with --resume, the latest)"
    )
    run.add_argument("--config", type=Path, help="smart_tuner.yaml (default: the embedded demo config)")
    run.add_argument("--resume", action="store_true", help="continue the run in --run-dir (or the latest run)")
    run.add_argument(
        "--quick", action="store_true", help="a short run (100 steps, under 3 minutes on 2 cores): a look, not tuning"
    )
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="console log level")
    run.add_argument(
        "--fork-from",
        metavar="RUN:SEGMENT",
        help="a new run from that segment's checkpoint and hyperparameters (the old run untouched); "
        "its config (or --config) with --set changes, the rest of its step budget",
    )
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="with --fork-from: a config key to change"
    )
    run.add_argument(
        "--dashboard", action="store_true", help="serve the web dashboard of this run on 127.0.0.1 while it runs"
    )
    run.add_argument("--dashboard-port", type=int, default=8050, metavar="PORT", help="its port (default 8050)")

    tail = sub.add_parser("tail", help="follow a run's events from another terminal", description=tools.tail.__doc__)
    tail.add_argument("run_dir", nargs="?", help="run directory or run id (default: the latest run)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--from-seq", type=int, default=1, metavar="N", help="start at event N (default 1)")
    tail.add_argument(
        "--type", dest="type_glob", metavar="GLOB", help="only event types matching GLOB, e.g. 'Segment*'"
    )
    tail.add_argument("--no-follow", action="store_true", help="print what is recorded and exit")

    replay = sub.add_parser("replay", help="rebuild and examine a run's state", description=tools.replay.__doc__)
    replay.add_argument("run_dir", help="run directory or run id")
    replay.add_argument("--timeline", action="store_true", help="decisions and lifecycle events with their reasons")
    replay.add_argument("--until", type=int, metavar="SEQ", help="stop at event SEQ (state at that point)")
    replay.add_argument(
        "--verify", action="store_true", help="check that replay equals tuner_state.yaml (exit 1 if not)"
    )
    replay.add_argument("--out", type=Path, metavar="FILE", help="write the result to FILE instead of stdout")
    replay.add_argument("--no-snapshot", action="store_true", help="fold every event from seq 1 (ignore snapshots)")
    replay.add_argument(
        "--what-if",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="re-decide the run with a config key changed (repeat), e.g. forks.margin=0.05 or guards.grad_norm_max=50: "
        "the recorded and the counterfactual decisions side by side, up to the first difference",
    )

    status = sub.add_parser("status", help="one screen about a run", description=tools.status.__doc__)
    status.add_argument("run_dir", nargs="?", help="run directory or run id (default: the latest run)")

    stop = sub.add_parser("stop", help="ask a running coordinator to stop gracefully", description=tools.stop.__doc__)
    stop.add_argument("run_dir", nargs="?", help="run directory or run id (default: the latest run)")
    stop.add_argument("--reason", default="operator request", help="recorded with the stop request")
    stop.add_argument("--no-wait", action="store_true", help="return once the request is recorded")
    stop.add_argument("--timeout-s", type=float, default=120.0, help="how long to wait for the run to finish")

    salvage = sub.add_parser(
        "salvage", help="cut a damaged journal after its last good record", description=tools.salvage.__doc__
    )
    salvage.add_argument("run_dir", help="run directory or run id")

    from ..watcher.probe import probe

    prb = sub.add_parser("probe", help="what Smart Tuner can read from a training's logs", description=probe.__doc__)
    prb.add_argument("target", help="TensorBoard log directory, console log file, or MLflow tracking URI")
    prb.add_argument("--run", dest="run_id", metavar="RUN_ID", help="MLflow: this run")
    prb.add_argument("--experiment", metavar="NAME", help="MLflow: the newest run of this experiment")
    prb.add_argument("--preset", help="TensorBoard: read with this preset instead of the detected one")

    _add_dashboard(sub)

    keys = sub.add_parser("keys", help="make a CURVE key pair for an encrypted tcp bus", description=cmd_keys.__doc__)
    keys.add_argument("directory", type=Path, help="where NAME.key and NAME.key_secret are written")
    keys.add_argument("--name", default="coordinator", help="file name stem (default: coordinator)")
    return parser


def _add_dashboard(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dash = sub.add_parser(
        "dashboard", help="the web dashboard of a run, live or finished", description=cmd_dashboard.__doc__
    )
    dash.add_argument("run_dir", nargs="?", help="run directory or run id (default: the latest run)")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    dash.add_argument("--port", type=int, default=8050, help="port (default 8050; 0: any free one)")
    dash.add_argument(
        "--token", help="the access token (default: a random one; or $SMART_TUNER_DASHBOARD_TOKEN)", default=None
    )
    dash.add_argument("--base-url", default="/", help="path prefix behind a reverse proxy, e.g. /tuner/")
    dash.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME", help="another Host name to answer to (repeat)"
    )
    dash.add_argument("--wait-s", type=float, default=120.0, help="how long to wait for a new run's log to appear")
    dash.add_argument("--exit-with", type=int, default=None, help=argparse.SUPPRESS)  # run --dashboard: the run's pid
    dash.add_argument(
        "--nice",
        type=int,
        default=10,
        help="lower this process's CPU priority by this much (default 10; 0: as is): a viewer yields to the training",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or (args_in[0].startswith("-") and args_in[0] not in ("-h", "--help")):
        args_in.insert(0, "run")
    args = build_parser().parse_args(args_in)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "tail":
            return tools.tail(
                _run_dir(args.run_dir),
                json_lines=args.json,
                from_seq=args.from_seq,
                type_glob=args.type_glob,
                follow=not args.no_follow,
            )
        if args.command == "replay" and args.what_if:
            return tools.what_if(_run_dir(args.run_dir), args.what_if)
        if args.command == "replay":
            return tools.replay(
                _run_dir(args.run_dir),
                timeline=args.timeline,
                until=args.until,
                verify=args.verify,
                out=args.out,
                use_snapshots=not args.no_snapshot,
            )
        if args.command == "status":
            return tools.status(_run_dir(args.run_dir))
        if args.command == "stop":
            return tools.stop(
                _run_dir(args.run_dir), reason=args.reason, wait=not args.no_wait, timeout_s=args.timeout_s
            )
        if args.command == "salvage":
            return tools.salvage(_run_dir(args.run_dir))
        if args.command == "keys":
            return cmd_keys(args.directory, args.name)
        if args.command == "dashboard":
            return cmd_dashboard(args)
        if args.command == "probe":
            from ..watcher.probe import probe

            return probe(args.target, run_id=args.run_id, experiment=args.experiment, preset=args.preset)
    except (ConfigError, JournalError, FileNotFoundError, tools.ToolError, ProbeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve a run's web dashboard: its lineage through time, every decision with its evidence and
    causes, the champion's schedule (export), curves, listening samples, health, Prometheus
    /metrics. Live while the run runs (Server-Sent Events), a post-mortem after.

    Bound to 127.0.0.1 and behind a token printed at start (open the printed address once; a
    cookie keeps you in). From another machine, tunnel rather than bind widely:
    ``ssh -L 8050:127.0.0.1:8050 trainbox`` then open the printed address on your side.
    """
    import asyncio
    import time

    from ..dashboard.security import Access, is_loopback, new_token
    from ..dashboard.server import serve

    # a new run's directory holds its config before its log: wait for the log there
    starting = args.run_dir is not None and RunPaths(Path(args.run_dir)).config.is_file()
    root = Path(args.run_dir) if starting else _run_dir(args.run_dir)
    if not 0 <= args.port <= 65535:
        raise tools.ToolError(f"--port must be 0..65535, got {args.port}")
    journal = RunPaths(root).journal
    deadline = time.monotonic() + max(0.0, args.wait_s)
    while not journal.is_file():
        if time.monotonic() > deadline:
            raise tools.ToolError(f"{root}: no events.log (not a run directory, or the run never started)")
        time.sleep(0.2)
    if args.nice > 0:
        os.nice(min(args.nice, 19))  # never slow the run it shows: its sequencer and trainers come first
    token = args.token or os.environ.get("SMART_TUNER_DASHBOARD_TOKEN") or new_token()
    access = Access.build(token, args.host, args.allow_host, args.base_url)
    if not is_loopback(args.host):
        print(
            f"warning: bound to {args.host}: anyone who can reach it and has the token can stop this run; "
            "an SSH tunnel to 127.0.0.1 is safer",
            file=sys.stderr,
        )

    def announce(url: str) -> None:
        print(f"Smart Tuner dashboard of {root}: {url}", flush=True)

    async def main() -> None:
        until = asyncio.Event()
        if args.exit_with is not None:  # started by `run --dashboard`: never outlive the run, even a killed one

            async def watch(pid: int) -> None:
                while True:
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        until.set()
                        return
                    except PermissionError:
                        pass
                    await asyncio.sleep(1.0)

            watcher = asyncio.create_task(watch(args.exit_with))
        await serve(root, access, args.host, args.port, announce=announce, until=until)
        if args.exit_with is not None:
            watcher.cancel()

    try:
        asyncio.run(main())
    except OSError as exc:
        raise tools.ToolError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    return 0


def _start_dashboard(paths: RunPaths, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """``run --dashboard``: the dashboard in its own process (a crash there never touches the run)."""
    from ..dashboard.security import new_token

    if port == 0:  # any free one, chosen here so that the address printed is the one served
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    token = new_token()
    entry = "import sys; from smart_tuner.actors.cli.main import main; sys.exit(main())"
    cmd = [
        sys.executable,
        "-c",
        entry,
        "dashboard",
        str(paths.root),
        "--port",
        str(port),
        "--exit-with",
        str(os.getpid()),
    ]
    env = {**os.environ, "SMART_TUNER_DASHBOARD_TOKEN": token}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}/?token={token}"


def cmd_keys(directory: Path, name: str) -> int:
    """Write a CURVE key pair: NAME.key (public, 0644) and NAME.key_secret (secret, 0600).

    The coordinator's pair: export its secret (the file's secret-key value) as the environment
    variable that bus.curve_server_secret names, e.g. ${SMART_TUNER_CURVE_SECRET}. A worker's
    pair: put its public key in the coordinator's bus.allow_keys. Existing files are kept."""
    from ..bus.zmqbus import load_keypair, write_keypair

    try:
        public_path, secret_path = write_keypair(directory, name)
    except FileExistsError as exc:
        raise tools.ToolError(f"{exc.filename} exists: keys are never overwritten (pick another --name)") from None
    public, _ = load_keypair(public_path)
    print(f"wrote {public_path} (public) and {secret_path} (secret, mode 0600)")
    print(f"public key  {public.decode()}")
    extract = f"sed -n 's/.*secret-key = \"\\(.*\\)\"/\\1/p' {secret_path}"
    print(f'secret      export SMART_TUNER_CURVE_SECRET="$({extract})"')
    return 0


def fork_document(spec: str, config: Path | None, changes: list[str]) -> dict[str, object]:
    """The config of a run forked from ``RUN:SEGMENT``: that run's config (or ``config``) with
    ``changes``, starting from the segment's checkpoint with its hyperparameters, for the rest of
    the old run's step budget. Reads the old run only."""
    import yaml

    from ..whatif import parse_overrides, set_keys

    source, _, segment_id = spec.rpartition(":")
    if not source or not segment_id:
        raise ConfigError(f"--fork-from {spec!r}: expected RUN_DIR:SEGMENT, e.g. runs/demo:r4-t8-g0")
    root = _run_dir(source)
    state = tools._load(RunPaths(root), None, True)
    segment = state.tuning.segments.get(segment_id)
    if segment is None:
        known = ", ".join(sorted(state.tuning.segments)[:12])
        raise ConfigError(f"--fork-from: {root} has no segment {segment_id!r} (it has: {known})")
    if segment.status != "finished" or not segment.checkpoint:
        raise ConfigError(f"--fork-from: segment {segment_id} {segment.status}: it left no checkpoint to fork from")
    checkpoint = Path(segment.checkpoint)
    for candidate in (checkpoint, root / "trainer" / "checkpoints" / checkpoint.name):
        if candidate.is_file():
            checkpoint = candidate.resolve()
            break
    else:
        raise ConfigError(f"--fork-from: the checkpoint of {segment_id} ({segment.checkpoint}) is gone")
    base = config if config is not None else RunPaths(root).config
    try:
        document = yaml.safe_load(base.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--fork-from: cannot read {base}: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"--fork-from: {base} is not a mapping")
    raw_budget = document.get("budget")
    budget: dict[str, Any] = dict(raw_budget) if isinstance(raw_budget, dict) else {}
    spent = sum(
        s.steps
        for s in state.tuning.segments.values()
        if s.status == "finished" and s.scheduled_seq <= segment.scheduled_seq
    )
    if isinstance(budget.get("max_steps"), int):  # the rest of the old run's budget, as a counterfactual
        budget = {**budget, "max_steps": max(1, budget["max_steps"] - spent)}
    trainer = dict(document.get("trainer") or {})
    trainer["hparams"] = {**(trainer.get("hparams") or {}), **segment.hparams, **segment.applied}
    document.update(
        budget=budget,
        trainer=trainer,
        resume_from_checkpoint=str(checkpoint),
        forked_from=f"{root.resolve()}:{segment_id}",
    )
    return set_keys(document, parse_overrides(changes) if changes else {}, "--set")


def load_fork(document: dict[str, object]) -> LoadedConfig:
    """``document`` read as a config file would be (``${NAME}`` expanded, validated, hashed)."""
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(prefix="smart-tuner-fork-") as tmp:
        path = Path(tmp) / "forked.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        loaded = load_config(path)
    return dataclasses.replace(loaded, source="--fork-from")


def _run_dir(arg: str | None) -> Path:
    return resolve_run_dir(arg)


def _refusal(paths: RunPaths, loaded: LoadedConfig, args: argparse.Namespace) -> str | None:
    """Why this run cannot start (checked again, under the journal lock, by the coordinator)."""
    if not args.resume and paths.journal.exists() and paths.journal.stat().st_size > 0:
        return f"{paths.root} already holds a run; use --resume, or another --run-dir"
    if writer_active(paths.journal):
        return f"{paths.root}: another coordinator is running this run (see `status`)"
    if args.resume and args.config is not None and paths.config.is_file():
        recorded = load_config(paths.config)
        if recorded.config_hash != loaded.config_hash:
            return (
                f"{paths.root} was started with config {recorded.config_hash[:12]} (recorded in {paths.config}), "
                f"not {loaded.config_hash[:12]} from {args.config}; resume without --config"
            )
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from ...trainer.logsetup import configure_logging
    from ..coordinator import RunError, run_coordinator

    if args.resume:
        root = args.run_dir or latest_run()
        if root is None:
            print(f"error: --resume: no runs under {RUNS_DIR}/ to resume", file=sys.stderr)
            return 2
        paths = RunPaths(Path(root))
        config_path = args.config or paths.config
        if not paths.config.is_file() and args.config is None:
            print(f"error: {paths.config}: missing; pass the run's --config", file=sys.stderr)
            return 2
    else:
        paths = RunPaths(args.run_dir or RUNS_DIR / new_run_id())
        config_path = args.config
    if args.set and not args.fork_from:
        print("error: --set changes a forked run's config: use it with --fork-from", file=sys.stderr)
        return 2
    fork_doc = None
    if args.fork_from:
        if args.resume:
            print("error: --fork-from starts a new run; it cannot be combined with --resume", file=sys.stderr)
            return 2
        fork_doc = fork_document(args.fork_from, args.config, args.set)
    loaded = load_config(config_path) if fork_doc is None else load_fork(fork_doc)  # refuses bad config first
    if args.quick and not args.resume:
        loaded = with_overrides(loaded, QUICK)
    level = args.log_level or loaded.raw.log_level
    refusal = _refusal(paths, loaded, args)
    if refusal:  # before any output or logging goes into another process's run
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    if not args.resume:
        paths.create()
        from ...state.config import dump_config
        from ...state.projection import write_atomic

        write_atomic(paths.config, dump_config(loaded.raw).encode("utf-8"))
    configure_logging(paths.logs / "coordinator.jsonl", level)
    print(f"Smart Tuner run {paths.run_id} in {paths.root}", file=sys.stderr)
    print(f"  follow it from another terminal: python run_tuner.py tail {paths.root}", file=sys.stderr)
    dashboard = None
    if args.dashboard:
        dashboard, url = _start_dashboard(paths, args.dashboard_port)
        print(f"  dashboard: {url}", file=sys.stderr)
    try:
        outcome = run_coordinator(paths, loaded, resume=args.resume)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dashboard is not None:
            dashboard.terminate()
    tools.print_summary(paths, outcome.state)
    if dashboard is not None:
        print(f"the dashboard after the run: python run_tuner.py dashboard {paths.root}", file=sys.stderr)
    return outcome.exit_code
