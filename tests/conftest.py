"""Shared fixtures: one tiny corpus (a dozen 2-4 word utterances) for every trainer test of the session;
and Hypothesis without its per-example deadline: tests check behaviour, never wall-clock time (on a loaded
machine a 200 ms deadline failed round trips that were right)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("behaviour", deadline=None)
settings.load_profile("behaviour")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding ``tiny-corpus`` (what ``TrainerConfig(dataset="tiny", data_dir=…)`` reads)."""
    from smart_tuner.trainer.corpus import make_tiny_corpus

    root = tmp_path_factory.mktemp("data")
    make_tiny_corpus(root / "tiny-corpus")
    return root
