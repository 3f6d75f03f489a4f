"""A minimal PNG writer for 8-bit grayscale and RGB images (alignment plots, spectrograms).

Called as ``write_png(path, image)`` or ``encode_png(image) -> bytes`` with a numpy uint8 array
of shape (H, W) or (H, W, 3). Output is a plain PNG: signature, IHDR, one IDAT with
zlib-compressed scanlines (filter type 0 on every row), IEND.

Imports the standard library (zlib, struct) and numpy only; it must not import PIL, matplotlib
or anything from the project, so the trainer can save images on a bare install.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .fileio import write_atomic

__all__ = ["PNG_SIGNATURE", "encode_png", "write_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_BIT_DEPTH = 8
_COLOUR_GRAY = 0
_COLOUR_RGB = 2
# PNG stores width and height as 4-byte unsigned ints, but the spec caps them at 2**31 - 1.
_MAX_SIDE = 2**31 - 1


def _chunk(kind: bytes, data: bytes) -> bytes:
    """Length, type, data, then the CRC over type + data (the length is not covered)."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _colour_type(image: object) -> int:
    """Validates the array and returns its PNG colour type."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim == 2:
        colour = _COLOUR_GRAY
    elif image.ndim == 3 and image.shape[2] == 3:
        colour = _COLOUR_RGB
    else:
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")
    height, width = image.shape[:2]
    if not (1 <= height <= _MAX_SIDE and 1 <= width <= _MAX_SIDE):
        raise ValueError(f"image height and width must lie in [1, {_MAX_SIDE}], got {height} x {width}")
    return colour


def encode_png(image: npt.NDArray[np.uint8], compression_level: int = 6) -> bytes:
    """The PNG file for ``image`` (uint8, (H, W) grayscale or (H, W, 3) RGB) as bytes."""
    colour = _colour_type(image)
    height, width = image.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, _BIT_DEPTH, colour, 0, 0, 0)
    rows = np.ascontiguousarray(image).reshape(height, -1)
    # Each scanline starts with its filter byte; 0 (None) keeps the writer trivial, and zlib
    # still compresses heat maps well.
    scanlines = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows], axis=1)
    idat = zlib.compress(scanlines.tobytes(), compression_level)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def write_png(path: str | os.PathLike[str], image: npt.NDArray[np.uint8]) -> None:
    """Writes ``image`` to ``path`` atomically: a reader (TensorBoard, the dashboard) sees either
    the old file or the complete new one, never a torn PNG."""
    write_atomic(Path(path), encode_png(image))
