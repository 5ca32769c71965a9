"""Crop filters: monochrome / line-art measure, perceptual hash, and near-duplicate search."""

from __future__ import annotations

import itertools
from array import array
from typing import Optional

import cv2
import numpy as np

HASH_BITS = 64
_BANDS = 4  # multi-index hashing: 4 bands of 16 bits
_BAND_BITS = HASH_BITS // _BANDS
_MASK = (1 << _BAND_BITS) - 1


def chroma(rgb: np.ndarray) -> float:
    """Mean chroma, max(R,G,B) - min(R,G,B) per pixel, 0-255. Grey and line art are ~0."""
    return float(np.mean(rgb.max(axis=2) - rgb.min(axis=2)))


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash (as imagehash.phash): 32x32 grey, DCT, the 8x8 lowest
    frequencies against their median. Returned as a signed int64 (Parquet-friendly)."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).flatten()
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return value - (1 << 64) if value >= 1 << 63 else value


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()


def _flips(width: int, radius: int) -> list[int]:
    """All masks of `width` bits with at most `radius` bits set."""
    masks = [0]
    for r in range(1, radius + 1):
        for pos in itertools.combinations(range(width), r):
            masks.append(sum(1 << p for p in pos))
    return masks


class HashIndex:
    """Near-neighbour search over 64-bit hashes within Hamming distance `max_distance`.

    Multi-index hashing: if two hashes differ in at most d bits, one of their 4 16-bit
    bands differs in at most d // 4 bits, so each band is probed with that many flips.
    Keys are ints (positions) and every list is a typed array: ~40 bytes a hash added."""

    def __init__(self, max_distance: int):
        self.d = max_distance
        self._probe = _flips(_BAND_BITS, max_distance // _BANDS)
        self._tables: list[dict[int, array]] = [{} for _ in range(_BANDS)]
        self._values = array("q")
        self._keys = array("q")

    @staticmethod
    def _bands(value: int) -> list[int]:
        v = value & ((1 << 64) - 1)
        return [(v >> (i * _BAND_BITS)) & _MASK for i in range(_BANDS)]

    def add(self, key: int, value: int) -> None:
        idx = len(self._values)
        self._values.append(value)
        self._keys.append(key)
        for table, band in zip(self._tables, self._bands(value)):
            found = table.get(band)
            if found is None:
                table[band] = array("q", (idx,))
            else:
                found.append(idx)

    def nearest(self, value: int) -> Optional[int]:
        """The key of the earliest-added hash within the distance, or None."""
        best: Optional[int] = None
        for table, band in zip(self._tables, self._bands(value)):
            for flip in self._probe:
                for idx in table.get(band ^ flip, ()):
                    if (best is None or idx < best) and hamming(self._values[idx], value) <= self.d:
                        best = idx
        return None if best is None else self._keys[best]


DUPLICATE_BATCH = 65536  # hashes turned into Python ints at a time


def find_duplicates(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """For int64 hashes taken in priority order: the position of the hash each one duplicates, or
    -1 for a hash kept (each is compared with the hashes kept before it)."""
    index = HashIndex(max_distance)
    original = np.full(len(hashes), -1, dtype=np.int64)
    for start in range(0, len(hashes), DUPLICATE_BATCH):
        for i, value in enumerate(hashes[start:start + DUPLICATE_BATCH].tolist(), start):
            found = index.nearest(value)
            if found is None:
                index.add(i, value)
            else:
                original[i] = found
    return original
