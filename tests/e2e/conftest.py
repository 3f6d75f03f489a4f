"""The ``cli`` fixture: a ``Cli`` harness in the test's scratch directory; its processes are killed at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cliharness import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    harness = Cli(tmp_path)
    try:
        yield harness
    finally:
        harness.close()
