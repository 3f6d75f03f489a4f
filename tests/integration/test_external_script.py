"""The user's script as a process: a graceful stop that escalates, its whole group, and no orphan.

Real processes and real signals: SIGINT first (a Python script gets KeyboardInterrupt and can
save), SIGTERM after the first timeout, SIGKILL after the second; the script gets SIGTERM
when the process that started it dies.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from smart_tuner.actors.external.script import Script
from tests.helpers.procs import alive

# The script says "ready" once its handlers are installed; HANDLERS is filled in per case.
SCRIPT = """
import os, signal, subprocess, sys, time
{handlers}
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("ready", child.pid, flush=True)
while True:
    time.sleep(0.05)
"""
CASES = {
    "SIGINT": "",  # KeyboardInterrupt ends it
    "SIGTERM": "signal.signal(signal.SIGINT, signal.SIG_IGN)",
    "SIGKILL": "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)",
}


def _wait_ready(log: Path, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if text.startswith("ready"):
            return int(text.split()[1])
        time.sleep(0.05)
    raise AssertionError(f"the script did not start: {log.read_text() if log.exists() else '(no log)'}")


@pytest.mark.parametrize("ends_by", list(CASES))
def test_the_stop_escalates_and_takes_the_whole_group(tmp_path: Path, ends_by: str) -> None:
    code_file = tmp_path / "script.py"
    code_file.write_text(SCRIPT.format(handlers=CASES[ends_by]))
    log = tmp_path / "console.log"

    async def scenario() -> tuple[Script, int, int]:
        script = Script.start([sys.executable, str(code_file)], log, {}, None)
        grandchild = await asyncio.to_thread(_wait_ready, log)
        code = await script.stop(sigint_s=0.5, sigterm_s=0.5)
        return script, code, grandchild

    script, code, grandchild = asyncio.run(scenario())
    assert script.stopped_by == ends_by
    expected = {"SIGINT": -signal.SIGINT, "SIGTERM": -signal.SIGTERM, "SIGKILL": -signal.SIGKILL}[ends_by]
    assert code == expected  # an uncaught KeyboardInterrupt ends Python by SIGINT itself
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild), "a process the script started outlived the stop"


def test_a_script_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    starter = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from smart_tuner.actors.external.script import Script
        script = Script.start([sys.executable, "-c", "import time; time.sleep(300)"], Path({str(tmp_path / "c.log")!r}),
                              {{}}, None)
        print(script.pid, flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        assert alive(pid)
        proc.kill()  # SIGKILL: the starter cannot clean up
        proc.wait(10)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the script kept running after the process that started it was killed"
    finally:
        proc.kill()


def test_a_child_started_in_our_checkout_imports_the_users_trainer_package_not_ours(tmp_path: Path) -> None:
    """Coqui's ``python -m TTS.bin.train_tts`` imports a top-level ``trainer`` package; started in this
    checkout, the working directory came first on ``sys.path`` and our ``trainer/`` folder won."""
    site = tmp_path / "site"
    (site / "trainer").mkdir(parents=True)
    (site / "trainer" / "__init__.py").write_text("Trainer = 'the users trainer'\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "model.py").write_text("NAME = 'a module beside the script'\n")
    (project / "train.py").write_text("import model\nimport trainer\nprint(model.NAME, '|', trainer.Trainer)\n")
    checkout = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(site)}

    async def run(argv: list[str], log: Path) -> int | None:
        return await Script.start(argv, log, env, str(checkout)).wait(60)

    as_module = [sys.executable, "-c", "import trainer; print(trainer.Trainer)"]
    assert asyncio.run(run(as_module, tmp_path / "a.log")) == 0, (tmp_path / "a.log").read_text()
    assert "the users trainer" in (tmp_path / "a.log").read_text()
    as_script = [sys.executable, str(project / "train.py")]
    assert asyncio.run(run(as_script, tmp_path / "b.log")) == 0, (tmp_path / "b.log").read_text()
    # its own folder is still on sys.path
    assert "a module beside the script | the users trainer" in (tmp_path / "b.log").read_text()
