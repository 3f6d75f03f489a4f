"""Import boundaries the design fixes, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

import pytest


def imported_after(*modules: str) -> set[str]:
    code = "import sys\n" + "".join(f"import {name}\n" for name in modules) + "print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_the_coordinator_never_imports_torch() -> None:
    loaded = imported_after("smart_tuner.actors.cli.main", "smart_tuner.actors.coordinator")
    assert "torch" not in loaded and "numpy" not in loaded


@pytest.mark.parametrize(
    "module", ["smart_tuner.trainer.harness", "smart_tuner.trainer.train", "smart_tuner.trainer.synthesis"]
)
def test_the_trainer_runs_without_the_tuner(module: str) -> None:
    loaded = imported_after(module)
    assert "zmq" not in loaded and "smart_tuner.trainer.client" not in loaded
    assert not any(name.startswith("smart_tuner.actors") for name in loaded)


def test_protocol_imports_only_the_standard_library_and_msgpack() -> None:
    extra = imported_after("smart_tuner.protocol") - imported_after("msgpack")
    foreign = {n for n in extra if not n.startswith("smart_tuner") and n.split(".")[0] not in sys.stdlib_module_names}
    assert not foreign, foreign
