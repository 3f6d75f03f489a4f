"""Packaging: the README's two commands, CI's command, and the smart_tuner namespace
(our `trainer/` must never become a top-level module that clobbers Coqui's `trainer`)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)?\n(.+?)\n```", head, flags=re.S)


def test_readme_opens_with_exactly_two_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    run_cmd, test_cmd = commands
    assert "python run_tuner.py" in run_cmd and "pip install" in run_cmd
    assert "pytest" in test_cmd and "pip install" in test_cmd


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = _readme_commands()[1].strip()
    assert test_cmd in ci, f"{test_cmd!r} is not in .ci/run"


def test_coqui_trainer_and_ours_import_side_by_side(tmp_path: Path) -> None:
    # From outside the repository (as a user's own project would), `trainer` is Coqui's
    # and ours is smart_tuner.trainer.
    code = (
        "import trainer, smart_tuner.trainer, smart_tuner.state, smart_tuner.protocol, smart_tuner.actors\n"
        "from trainer import Trainer\n"
        "assert 'site-packages' in trainer.__file__, trainer.__file__\n"
        "assert trainer.__file__ != smart_tuner.trainer.__file__\n"
        "import importlib.util\n"
        "for name in ('protocol', 'state', 'actors'):\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    assert spec is None or 'smart' not in str(spec.origin), (name, spec)\n"
        "print('ok', Trainer.__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ok trainer.trainer" in result.stdout


def test_wheel_puts_everything_under_smart_tuner(tmp_path: Path) -> None:
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    result = subprocess.run([*pip_wheel, str(ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("smart_tuner-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert modules, names
    assert all(n.startswith("smart_tuner/") for n in modules), [n for n in modules if not n.startswith("smart_tuner/")]
    for pkg in ("actors", "protocol", "state", "trainer"):
        assert f"smart_tuner/{pkg}/__init__.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "smart-tuner = smart_tuner.actors.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
