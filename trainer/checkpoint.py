"""Checkpoints: everything needed to continue training exactly, written atomically, verified on load.

A checkpoint is one ``torch.save`` file holding plain containers and tensors only:

    format, model, optimizer, ema, step, stream (epoch, position, seed, batch size),
    rng (python, numpy, torch, cuda), scaler, schedule (guided-attention decay steps),
    hparams, compat (cold-parameter hash, symbol set, dataset), n_symbols

Written to a temp file in the same folder, fsync'ed, renamed into place, the folder
fsync'ed; its sha256 goes into ``<file>.sha256`` beside it and is returned, so the event
log can name it. Loading reads the bytes once, checks the sha256 (the caller's, or the
sidecar's), then unpickles with ``weights_only=True``: a truncated or tampered file is
refused before anything in it is executed or used.

Imports torch, numpy, the standard library and ``trainer.fileio`` only.
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fileio import fsync_dir, write_atomic

FORMAT = 1
SIDECAR = ".sha256"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, damaged, tampered, or made for another model."""


def save(path: Path, payload: dict[str, Any]) -> str:
    """Write ``payload`` atomically to ``path``; returns its sha256 (also written to the sidecar)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    write_atomic(path, data)
    write_atomic(path.with_name(path.name + SIDECAR), f"{digest}  {path.name}\n".encode())
    fsync_dir(path.parent)
    return digest


def recorded_sha256(path: Path) -> str | None:
    side = path.with_name(path.name + SIDECAR)
    if not side.exists():
        return None
    text = side.read_text(encoding="ascii", errors="replace").split()
    return text[0] if text else None


def load(path: Path, expected_sha256: str | None = None, *, map_location: str = "cpu") -> dict[str, Any]:
    """The payload at ``path`` after checking its sha256 (``expected_sha256``, else the sidecar's)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path}: cannot read it ({exc.strerror or exc})") from None
    want = expected_sha256 or recorded_sha256(path)
    if want is None:
        raise CheckpointError(f"checkpoint {path}: no sha256 to check it against (no {path.name}{SIDECAR})")
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise CheckpointError(
            f"checkpoint {path}: sha256 {got[:16]}… does not match the recorded {want[:16]}… "
            "(truncated, damaged or replaced since it was written)"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # a file whose hash matched but that torch cannot read is still unusable
        raise CheckpointError(f"checkpoint {path}: cannot be loaded safely ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a Smart Tuner checkpoint of format {FORMAT}")
    return payload


# --- random number generators --------------------------------------------------------
# weights_only=True admits tensors and plain containers, so each state is stored as one.


def rng_state() -> dict[str, Any]:
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    return {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_lists_to_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    # A checkpoint loaded with map_location="cuda" has its RNG tensors there; generators take CPU bytes.
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _tuples_to_lists(value: Any) -> Any:
    return [_tuples_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _lists_to_tuples(value: Any) -> Any:
    return tuple(_lists_to_tuples(v) for v in value) if isinstance(value, list) else value
