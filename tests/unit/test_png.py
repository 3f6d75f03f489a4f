"""The PNG writer: an independent reader in this file decodes its output back to the same pixels."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from smart_tuner.trainer.png import encode_png, write_png

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Splits a PNG into (type, data) chunks, checking every CRC."""
    assert data[:8] == SIGNATURE
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        offset += 12 + length
    assert offset == len(data)
    return chunks


def _decode(data: bytes) -> npt.NDArray[np.uint8]:
    """A reader for exactly what the writer promises: 8-bit gray or RGB, no interlace, filter 0."""
    chunks = _chunks(data)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    assert chunks[-1][1] == b""
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, compression, filtering, interlace) == (8, 0, 0, 0)
    channels = {0: 1, 2: 3}[colour]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = 1 + width * channels
    assert len(raw) == height * stride
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride)
    assert not rows[:, 0].any(), "every scanline must use filter type 0"
    pixels = rows[:, 1:].reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def _random_image(shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 200)])
def test_grayscale_round_trip(shape: tuple[int, int]) -> None:
    image = _random_image(shape)
    decoded = _decode(encode_png(image))
    assert decoded.shape == shape
    assert np.array_equal(decoded, image)


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 9, 3), (40, 80, 3)])
def test_rgb_round_trip(shape: tuple[int, int, int]) -> None:
    image = _random_image(shape)
    decoded = _decode(encode_png(image))
    assert decoded.shape == shape
    assert np.array_equal(decoded, image)


def test_non_contiguous_input_is_encoded_as_seen() -> None:
    image = _random_image((10, 20, 3))
    view = image[::-1, ::2]  # a strided view, as np.flipud hands out
    assert np.array_equal(_decode(encode_png(view)), view)


def test_ihdr_fields() -> None:
    chunks = _chunks(encode_png(np.zeros((3, 5, 3), dtype=np.uint8)))
    assert chunks[0][0] == b"IHDR"
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (5, 3, 8, 2, 0, 0, 0)
    chunks = _chunks(encode_png(np.zeros((3, 5), dtype=np.uint8)))
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (5, 3, 8, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4), dtype=np.float32), "dtype"),
        (np.zeros((4, 4), dtype=np.uint16), "dtype"),
        (np.zeros((4, 4, 4), dtype=np.uint8), "shape"),
        (np.zeros((4,), dtype=np.uint8), "shape"),
        (np.zeros((0, 4), dtype=np.uint8), "height and width"),
        ([[0, 1], [2, 3]], "numpy array"),
    ],
    ids=["float32", "uint16", "rgba", "1d", "empty", "list"],
)
def test_bad_input_raises(image: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_png(image)  # type: ignore[arg-type]


def test_write_png_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "alignment.png"
    first, second = _random_image((4, 6)), _random_image((8, 3, 3))
    write_png(target, first)
    write_png(str(target), second)
    assert np.array_equal(_decode(target.read_bytes()), second)
    assert os.listdir(tmp_path) == ["alignment.png"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_write_png_bad_input_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    image = _random_image((2, 2))
    write_png(target, image)
    with pytest.raises(ValueError):
        write_png(target, np.zeros((2, 2), dtype=np.int64))
    assert np.array_equal(_decode(target.read_bytes()), image)
    assert os.listdir(tmp_path) == ["a.png"]


def test_pillow_reads_it_too_when_installed() -> None:
    pil_image = pytest.importorskip("PIL.Image")
    for image in (_random_image((9, 17)), _random_image((9, 17, 3))):
        with pil_image.open(io.BytesIO(encode_png(image))) as decoded:
            assert decoded.mode == ("L" if image.ndim == 2 else "RGB")
            assert np.array_equal(np.asarray(decoded), image)
