"""structlog, configured once per process: JSON lines to a file, readable console.

``configure_logging(log_file, console_level)`` routes structlog and the
standard library's logging through two handlers: ``logs/<name>.jsonl`` in the
run directory (everything at debug and above, one JSON object per line) and
stderr (human-readable, at ``console_level``). Bind ``actor``, ``run_id``,
``segment_id`` and ``seq`` with ``structlog.contextvars`` or ``log.bind``.
Imports the standard library and structlog only.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import structlog

_configured = False


def configure_logging(log_file: Path | None, console_level: str = "info") -> None:
    global _configured
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not _configured:
        structlog.configure(
            processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )
        _configured = True
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_smart_tuner", False):
            root.removeHandler(handler)
            handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level.upper())
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
            ],
            foreign_pre_chain=shared,
        )
    )
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.dict_tracebacks,
                    structlog.processors.JSONRenderer(),
                ],
                foreign_pre_chain=shared,
            )
        )
        handlers.append(file_handler)
    for handler in handlers:
        handler._smart_tuner = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Chatty libraries stay at warning in both outputs.
    for name in ("asyncio", "urllib3", "alembic", "mlflow", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
