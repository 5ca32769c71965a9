"""16-bit PNGs, written byte by byte (Pillow writes 16-bit greyscale only): greyscale, grey +
alpha, RGB and RGBA at 16 bits per sample, optionally with a tRNS chunk (the one transparent grey)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: grey, grey+alpha, RGB, RGBA


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(path: Path, samples: np.ndarray, transparent_grey: int | None = None) -> Path:
    """`samples`: (H, W) or (H, W, C) values 0..65535, C = 2 (grey, alpha), 3 (RGB) or 4 (RGBA)."""
    a = np.asarray(samples)
    assert a.min() >= 0 and a.max() <= 65535, "16-bit samples"
    a = a.astype(">u2")
    h, w = a.shape[:2]
    channels = 1 if a.ndim == 2 else a.shape[2]
    rows = b"".join(b"\x00" + a[y].tobytes() for y in range(h))  # filter type 0 on every row
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, COLOUR_TYPES[channels], 0, 0, 0))
    if transparent_grey is not None:
        assert channels == 1, "tRNS with one grey value is for greyscale images"
        png += _chunk(b"tRNS", struct.pack(">H", transparent_grey))
    png += _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
    Path(path).write_bytes(png)
    return Path(path)
