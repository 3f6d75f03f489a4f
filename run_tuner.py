#!/usr/bin/env python3
"""Smart Tuner's command line: ``python run_tuner.py [run|tail|replay|status|stop|salvage] ...``.

A thin launcher; the commands live in ``smart_tuner.actors.cli.main``. The project
must be installed (``pip install -e .``) so that its folders import under the
``smart_tuner`` namespace.
"""

from __future__ import annotations

import sys

try:
    from smart_tuner.actors.cli.main import main
except ModuleNotFoundError as exc:  # pragma: no cover - only without the install step
    if exc.name and exc.name.startswith("smart_tuner"):
        sys.exit("error: smart_tuner is not installed; run `pip install -e .` in this directory first")
    raise

if __name__ == "__main__":
    sys.exit(main())
