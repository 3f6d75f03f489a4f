"""The code stays lint-clean, formatted and type-checked: part of the test suite, so the
README's one test command covers it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args", [("check", "."), ("format", "--check", ".")], ids=["lint", "format"])
def test_ruff(args: tuple[str, ...]) -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = _run(ruff, *args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def _python_files() -> list[Path]:
    folders = ("actors", "protocol", "state", "trainer", "tests", "bench")
    return [ROOT / "run_tuner.py", *(p for folder in folders for p in sorted((ROOT / folder).rglob("*.py")))]


def test_no_line_is_longer_than_120_characters() -> None:
    """ruff's E501 lets a line run long for a pragma comment; the house rule does not."""
    long = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _python_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if len(line) > 120
    ]
    assert not long, long


def test_the_formatter_owns_layout() -> None:
    """The formatter's skip and off pragmas only with a comment on the line above saying why."""
    marker = "# fmt: " + "skip"  # written in two parts so this file does not match itself
    off = "# fmt: " + "off"
    unexplained = []
    for path in _python_files():
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            if (marker in line or off in line) and not (n > 1 and lines[n - 2].lstrip().startswith("#")):
                unexplained.append(f"{path.relative_to(ROOT)}:{n}")
    assert not unexplained, unexplained
