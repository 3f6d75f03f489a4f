"""The user's script as a process: its command line, its start, its graceful stop.

``build_argv``: the command template with its placeholders filled (``{hparams}``,
``{checkpoint}``, ``{output_dir}``, ...). ``Script.start``: argv (never a shell) in a process
group of its own, stdout and stderr appended to the console log, ``PYTHONUNBUFFERED=1``, our
own secrets (CURVE keys, the external section) left out of its environment, our checkout's
folders kept off its ``sys.path`` (``isolated``), SIGTERM if this process dies
(``PR_SET_PDEATHSIG``). ``Script.stop``: SIGINT to the group, then SIGTERM, then SIGKILL.

Imports the standard library, the launcher's ``GroupProcess`` and the names of the variables
it must not pass on (``CURVE_ENV`` from the bus, the launcher's spec variable) only: nothing
of the worker protocol or the log sources, and never torch.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..bus.zmqbus import CURVE_ENV
from ..supervisor.launcher import EXTERNAL_SPEC_ENV as SPEC_ENV
from ..supervisor.launcher import GroupProcess


def build_argv(
    template: Sequence[str], fills: Mapping[str, str], hparams: Sequence[str], checkpoint: str | None
) -> list[str]:
    """The template with its placeholders filled; with no checkpoint, ``-c {checkpoint}`` is left out."""
    out: list[str] = []
    for token in template:
        if token == "{hparams}":
            out += hparams
            continue
        if "{checkpoint}" in token and checkpoint is None:
            if token == "{checkpoint}" and out and out[-1].startswith("-"):
                out.pop()  # the option that named it goes with it
            continue
        values = {**fills, "checkpoint": checkpoint or "", "hparams": hparams[0] if len(hparams) == 1 else ""}
        out.append(token.format(**values))
    return out


CHECKOUT_MARKERS = ("run_tuner.py", "trainer/harness.py", "actors/coordinator.py", "protocol/messages.py")


def _is_checkout(folder: Path) -> bool:
    """Smart Tuner's own source folder: its top-level ``trainer/``, ``state/``... would shadow a
    user's packages of those names for a ``python -m``/``-c`` child started in it."""
    return all((folder / marker).is_file() for marker in CHECKOUT_MARKERS)


def isolated(argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> dict[str, str]:
    """``env`` for a child started in ``cwd``: in our checkout, ``PYTHONSAFEPATH=1`` so that no Python
    in the child puts the working directory first on ``sys.path`` (``python -m TTS.bin.train_tts`` found
    our ``trainer/`` before Coqui's ``trainer`` package), and each ``.py`` script of the command line
    gets its own folder on ``PYTHONPATH`` back (safe-path mode drops it too: NVIDIA's ``train.py``
    imports its ``model.py`` beside it)."""
    out = dict(env)
    if not _is_checkout(Path(cwd or os.getcwd()).resolve()):
        return out
    out["PYTHONSAFEPATH"] = "1"
    folders = [str(Path(a).resolve().parent) for a in argv[1:] if a.endswith(".py") and Path(a).is_file()]
    if folders:
        out["PYTHONPATH"] = os.pathsep.join([*dict.fromkeys(folders), *filter(None, [out.get("PYTHONPATH")])])
    return out


def _die_with_parent() -> None:  # runs in the child between fork and exec: no Python objects of the parent
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Script(GroupProcess):
    """The user's script: own process group, console to a file, a graceful stop."""

    @classmethod
    def start(cls, argv: Sequence[str], log_file: Path, env: Mapping[str, str], cwd: str | None) -> Script:
        """Started from the event loop's thread: the parent-death signal follows the thread that forked."""
        # our own secrets (the CURVE keys, the external section) are not the script's business
        inherited = {k: v for k, v in os.environ.items() if k not in (*CURVE_ENV, SPEC_ENV)}
        with open(log_file, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=isolated(argv, {**inherited, **env, "PYTHONUNBUFFERED": "1"}, cwd),
                cwd=cwd,
                start_new_session=True,
                # only prctl runs in the child before exec, and this thread forks
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        return cls(popen)

    async def stop(self, sigint_s: float, sigterm_s: float) -> int:
        """SIGINT to the group, SIGTERM after ``sigint_s``, SIGKILL after ``sigterm_s``; the exit code."""
        return await self.escalate(((signal.SIGINT, sigint_s), (signal.SIGTERM, sigterm_s)))
