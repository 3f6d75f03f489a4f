"""Reading ``smart_tuner.yaml``: the YAML document (duplicate keys refused), ``${NAME}``
expansion, errors formatted into ``ConfigError``, ``load_config`` and ``LoadedConfig``; the
recordable form, its hash and its YAML dump; ``QUICK`` and ``with_overrides``.

Imports the standard library, pydantic, pyyaml, ``base`` and ``schema`` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .base import drop_unset_late_settings
from .schema import TunerConfig

DEFAULTS_SOURCE = "<defaults>"
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_TOKEN = re.compile(r"\$?" + ENV_REFERENCE.pattern)  # "$${X}" is an escaped, literal "${X}"
_MAX_GOT_CHARS = 60
_NOT_TYPE_ERRORS = ("value_error", "extra_forbidden")


class ConfigError(ValueError):
    """An invalid config; the message names the file, the key path and the value."""


# --- recording ---------------------------------------------------------------


def to_recordable(cfg: TunerConfig) -> dict[str, Any]:
    """JSON-ready dump of a *raw* config: SecretStr fields show the template text as written.

    Pass ``LoadedConfig.raw`` only: a resolved config would dump its secrets here.
    """
    data = cfg.model_dump(mode="json")
    data["alerts"]["urls"] = [url.get_secret_value() for url in cfg.alerts.urls]
    if cfg.optuna_storage is not None:
        data["optuna_storage"] = cfg.optuna_storage.get_secret_value()
    return data


def hash_config(cfg: TunerConfig) -> str:
    """sha256 hex of the canonical JSON of the recordable form; independent of the environment."""
    recordable = drop_unset_late_settings(cfg, to_recordable(cfg))
    canonical = json.dumps(recordable, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def dump_config(cfg: TunerConfig) -> str:
    """YAML text of the recordable form (pass a raw config; see ``to_recordable``)."""
    return yaml.safe_dump(to_recordable(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    raw: TunerConfig  # templates intact: record this one
    resolved: TunerConfig = field(repr=False)  # secrets expanded: memory only
    source: str
    config_hash: str

    def recordable(self) -> dict[str, Any]:
        return to_recordable(self.raw)


# --- loading -----------------------------------------------------------------


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads ``1e-4`` as a float (as YAML 1.2 does)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: list[object] = []
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # keys brought in by `<<:` may be overridden
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.append(key)
    return loader.construct_mapping(node, deep=True)


_ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_document(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc}") from None
    try:
        document = yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: as safe as safe_load
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        raise ConfigError(f"{source}: YAML error at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: YAML error: {exc}") from None
    if document is None:  # an empty file means all defaults
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(document).__name__}")
    return document


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _truncate(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_GOT_CHARS else text[: _MAX_GOT_CHARS - 3] + "..."


def _lookup(document: object, loc: tuple[int | str, ...]) -> tuple[bool, object]:
    node: Any = document
    for part in loc:
        try:
            node = node[part]  # a dict key or a list index
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, node


def _format_errors(
    exc: ValidationError, source: str, *, raw_document: object = None, secrets: Mapping[str, str] | None = None
) -> str:
    """One line per error. With ``secrets`` (value -> variable name), the values shown come from
    ``raw_document`` and every expanded value in a message is put back as its ``${NAME}``."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        msg = error["msg"].removeprefix("Value error, ")
        found, got = (True, error["input"]) if secrets is None else _lookup(raw_document, loc)
        if secrets is not None:
            for value in sorted(secrets, key=len, reverse=True):
                msg = msg.replace(value, "${" + secrets[value] + "}")
        if isinstance(got, str) and ENV_REFERENCE.search(got) and error["type"] not in _NOT_TYPE_ERRORS:
            msg += "; ${NAME} templates work in free-text string fields only"
        lines.append(f"{source}: {_format_loc(loc)}: {msg}" + (f" (got {_truncate(got)})" if found else ""))
    return "\n".join(lines)


def _expand(
    value: object, environ: Mapping[str, str], source: str, loc: tuple[int | str, ...], used: dict[str, str]
) -> object:
    """A copy of ``value`` with ``${NAME}`` expanded in every string; ``used`` collects value -> NAME."""
    if isinstance(value, dict):
        return {key: _expand(item, environ, source, (*loc, key), used) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, environ, source, (*loc, i), used) for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if match.group(0).startswith("$$"):
            return "${" + name + "}"
        if name not in environ:
            raise ConfigError(f"{source}: {_format_loc(loc)}: environment variable {name} is not set")
        if environ[name]:
            used[environ[name]] = name
        return environ[name]

    return _ENV_TOKEN.sub(substitute, value)


def _validate(
    document: object, source: str, *, raw_document: object = None, secrets: Mapping[str, str] | None = None
) -> TunerConfig:
    try:
        return TunerConfig.model_validate(document)
    except ValidationError as exc:
        message = _format_errors(exc, source, raw_document=raw_document, secrets=secrets)
    # raised outside the handler: no __context__ may keep the ValidationError, which holds the expanded values
    raise ConfigError(message)


def validate_document(document: object, source: str) -> TunerConfig:
    """A config mapping as a file holds it (``${NAME}`` templates unexpanded), validated; ConfigError names the key."""
    return _validate(document, source)


def load_config(path: Path | None, *, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, validate and expand a config file; ``path=None`` gives the embedded defaults.

    Raises ConfigError for an unreadable file, bad YAML, an invalid value or an unset variable.
    """
    environ = os.environ if environ is None else environ
    source = DEFAULTS_SOURCE if path is None else str(path)
    document = {} if path is None else _read_document(path)
    raw = _validate(document, source)  # first: its errors show the templates as written
    used: dict[str, str] = {}
    expanded = _expand(document, environ, source, (), used)
    resolved = _validate(expanded, source, raw_document=document, secrets=used)
    return LoadedConfig(raw=raw, resolved=resolved, source=source, config_hash=hash_config(raw))


# ``run --quick``: the embedded demo cut to a few minutes on two cores (a look, not a result).
QUICK = {
    "budget": {"max_steps": 100},
    "forks": {"warmup_steps": 20, "first_round_candidates": 3, "probe_steps": 15, "exploit_steps": 30},
}


def with_overrides(loaded: LoadedConfig, overrides: Mapping[str, Mapping[str, Any]]) -> LoadedConfig:
    """``loaded`` with whole sections' keys replaced (validated again, hashed again)."""

    def apply(cfg: TunerConfig) -> TunerConfig:
        changes = {}
        for section, values in overrides.items():
            current = getattr(cfg, section)
            changes[section] = type(current).model_validate({**current.model_dump(), **values})
        return cfg.model_copy(update=changes)

    raw = apply(loaded.raw)
    return LoadedConfig(
        raw=raw, resolved=apply(loaded.resolved), source=loaded.source + " (--quick)", config_hash=hash_config(raw)
    )
