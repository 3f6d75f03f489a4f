"""The import boundaries of the layout, read from every module's source (AST, not grep).

Each rule names the offending module and import when it fails. The runtime check that the
coordinator's process never loads torch or numpy (imports made through other modules
included) is in ``test_boundaries.py``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("actors", "protocol", "state", "trainer")
THIRD_PARTY_OF_PROTOCOL = {"msgpack"}


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(["smart_tuner", *parts]), path


def imports_of(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in the file, relative ones resolved."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # ``from . import commands`` imports a module too
                yield node.lineno, f"{target}.{alias.name}"


ALL = [(name, path, line, target) for name, path in modules() for line, target in imports_of(name, path)]


Rule = Callable[[str, str], str | None]


def offences(rule: Rule) -> list[str]:
    found = []
    for name, _path, line, target in ALL:
        problem = rule(name, target)
        if problem:
            found.append(f"{name} line {line} imports {target}: {problem}")
    return found


def _top(target: str) -> str:
    return target.split(".", maxsplit=1)[0]


def _ours(target: str, package: str) -> bool:
    return target == f"smart_tuner.{package}" or target.startswith(f"smart_tuner.{package}.")


def protocol_is_pure(name: str, target: str) -> str | None:
    if not _ours(name, "protocol") or target.startswith("smart_tuner.protocol") or _top(target) == "__future__":
        return None
    if _top(target) in sys.stdlib_module_names or _top(target) in THIRD_PARTY_OF_PROTOCOL:
        return None
    return "protocol/ imports the standard library and msgpack only"


def state_stays_below(name: str, target: str) -> str | None:
    if not _ours(name, "state"):
        return None
    if _ours(target, "actors") or _ours(target, "trainer") or _top(target) in {"torch", "zmq"}:
        return "state/ never imports actors/, trainer/, torch or zmq"
    return None


def only_the_bus_imports_zmq(name: str, target: str) -> str | None:
    if _top(target) == "zmq" and not name.startswith("smart_tuner.actors.bus"):
        return "only the bus package (actors/bus/) imports zmq"
    return None


def trainer_reaches_the_tuner_through_its_client(name: str, target: str) -> str | None:
    if not _ours(name, "trainer") or not _ours(target, "actors"):
        return None
    if name != "smart_tuner.trainer.client":
        return "trainer/ reaches the tuner through trainer/client.py only"
    if not _ours(target, "actors.bus"):
        return "trainer/client.py imports the bus package only"
    return None


RULES: list[Rule] = [
    protocol_is_pure,
    state_stays_below,
    only_the_bus_imports_zmq,
    trainer_reaches_the_tuner_through_its_client,
]


@pytest.mark.parametrize("rule", RULES, ids=[r.__name__ for r in RULES])
def test_import_rule(rule: Rule) -> None:
    problems = offences(rule)
    assert not problems, "\n".join(problems)


def test_the_rules_see_every_package_and_catch_a_violation() -> None:
    """The checker itself: it reads all four packages and a bad import is reported by name."""
    seen = {name.split(".")[1] for name, *_ in ALL}
    assert seen == set(PACKAGES)
    assert protocol_is_pure("smart_tuner.protocol.codec", "yaml")
    assert state_stays_below("smart_tuner.state.reducers", "smart_tuner.actors.tuner")
    assert only_the_bus_imports_zmq("smart_tuner.actors.coordinator", "zmq.asyncio")
    assert trainer_reaches_the_tuner_through_its_client("smart_tuner.trainer.worker", "smart_tuner.actors.bus")
    assert trainer_reaches_the_tuner_through_its_client("smart_tuner.trainer.client", "smart_tuner.actors.store")
    assert not trainer_reaches_the_tuner_through_its_client("smart_tuner.trainer.client", "smart_tuner.actors.bus")
    resolved = dict(((n, t), line) for n, _p, line, t in ALL)
    assert ("smart_tuner.actors.cli.main", "smart_tuner.actors.cli.commands") in resolved
