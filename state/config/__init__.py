"""The one schema for ``smart_tuner.yaml``, and the loader that validates it.

Called as ``loaded = load_config(path)``; ``loaded.raw`` is the config exactly as
written (``${NAME}`` templates intact) and is what the event log, the YAML
projection and ``config_hash`` see; ``loaded.resolved`` has the templates
expanded from the environment and lives in memory only, because it may hold
secrets (webhook URLs, CURVE keys).

The raw document is validated first, so an error message shows the template a
user wrote, never the secret it expands to. Every error is a ``ConfigError``
naming the file, the key path and the offending value.

What lives where (import from here, ``smart_tuner.state.config``, not from the modules):

* ``base``: ``_Frozen``, the base of every config model; the identifier rule; ``HparamValue``.
* ``schema``: the pydantic models of every section (``SearchParam``, ``Budget``, ``StopRules``,
  ``TrainerSection``, ``ForksConfig``, ``PbtConfig``, ``BusConfig``, ``JournalConfig``,
  ``AlertsConfig``), the default search space and ``TunerConfig``, the whole document.
* ``external``: the ``external:`` section (``ExternalConfig``), its command placeholders
  and validators, and the type check of a search parameter against the script's value.
* ``loader``: reading the YAML document, ``${NAME}`` expansion, error formatting into
  ``ConfigError``, ``load_config`` and ``LoadedConfig``; the recordable form, ``hash_config``
  and ``dump_config``; ``QUICK`` and ``with_overrides``.

The package imports the standard library, pydantic and pyyaml only (like all of ``state/``:
never actors/, trainer/, torch or zmq).
"""

from __future__ import annotations

from .base import HparamValue
from .external import EXTERNAL_PLACEHOLDERS, ExternalConfig, ExternalValue
from .loader import (
    DEFAULTS_SOURCE,
    ENV_REFERENCE,
    QUICK,
    ConfigError,
    LoadedConfig,
    dump_config,
    hash_config,
    load_config,
    to_recordable,
    with_overrides,
)
from .schema import (
    AlertsConfig,
    Budget,
    BusConfig,
    Choice,
    ForksConfig,
    GuardsConfig,
    JournalConfig,
    PbtConfig,
    SearchParam,
    SearchType,
    StopRules,
    TrainerSection,
    TunerConfig,
)

__all__ = [
    "DEFAULTS_SOURCE",
    "ENV_REFERENCE",
    "EXTERNAL_PLACEHOLDERS",
    "QUICK",
    "AlertsConfig",
    "Budget",
    "BusConfig",
    "Choice",
    "ConfigError",
    "ExternalConfig",
    "ExternalValue",
    "ForksConfig",
    "GuardsConfig",
    "HparamValue",
    "JournalConfig",
    "LoadedConfig",
    "PbtConfig",
    "SearchParam",
    "SearchType",
    "StopRules",
    "TrainerSection",
    "TunerConfig",
    "dump_config",
    "hash_config",
    "load_config",
    "to_recordable",
    "with_overrides",
]
