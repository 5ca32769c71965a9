"""The seed -> z mapping shared with the web page (web/src/noise.js implements it bit for bit):
mulberry32 (a 32-bit PRNG) feeding Box-Muller, rounded to float32. Pure Python, no numpy, so
it is obviously the same algorithm as the JavaScript; a test runs both and compares.

A seed is an unsigned 32-bit integer; `variation_seeds(seed, k)` derives the seeds of the
page's strip of variations, so each variation is itself shareable by its seed."""

from __future__ import annotations

import math
import struct

NOISE_ALGORITHM = "mulberry32-boxmuller-v1"  # recorded in the model manifest; bump on any change
_M = 0xFFFFFFFF
_VARIATION_SALT = 0x9E3779B9


def _imul(a: int, b: int) -> int:
    return (a * b) & _M


def mulberry32(seed: int):
    """A generator of floats in [0, 1), exactly JavaScript's mulberry32."""
    a = seed & _M
    while True:
        a = (a + 0x6D2B79F5) & _M
        t = _imul(a ^ (a >> 15), 1 | a)
        t = ((t + _imul(t ^ (t >> 7), 61 | t)) & _M) ^ t
        yield ((t ^ (t >> 14)) & _M) / 4294967296.0


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def seed_to_z(seed: int, dim: int) -> list[float]:
    """`dim` standard normal floats (float32 values) for `seed`: Box-Muller on mulberry32 pairs."""
    rand = mulberry32(seed)
    out: list[float] = []
    while len(out) < dim:
        u1 = 1.0 - next(rand)  # (0, 1]: log is finite
        u2 = next(rand)
        r = math.sqrt(-2.0 * math.log(u1))
        out.append(_f32(r * math.cos(2.0 * math.pi * u2)))
        out.append(_f32(r * math.sin(2.0 * math.pi * u2)))
    return out[:dim]


def variation_seeds(seed: int, k: int) -> list[int]:
    """Seeds of `k` variations of `seed` (uint32)."""
    rand = mulberry32((seed ^ _VARIATION_SALT) & _M)
    return [int(next(rand) * 4294967296.0) & _M for _ in range(k)]


def parse_seed(text: str | int) -> int:
    """A seed as the page reads its seed field: decimal digits reduced to uint32, any other text
    hashed (FNV-1a over its UTF-16 code units)."""
    s = str(text).strip()
    if s.isascii() and s.isdigit():
        return int(s) & _M
    h = 0x811C9DC5
    units = s.encode("utf-16-le")
    for i in range(0, len(units), 2):
        h = _imul(h ^ int.from_bytes(units[i:i + 2], "little"), 0x01000193)
    return h


def perturb(z: list[float], e: list[float], amount: float) -> list[float]:
    """web/src/noise.js perturb: sqrt(1 - a^2) z + a e in doubles, rounded to float32."""
    a = min(1.0, max(0.0, amount))
    k = math.sqrt(1 - a * a)
    return [_f32(k * zi + a * ei) for zi, ei in zip(z, e, strict=True)]


def slerp(a: list[float], b: list[float], t: float) -> list[float]:
    """web/src/noise.js slerp (tasks/render/sheets.py's in doubles), rounded to float32."""
    dot = na = nb = 0.0
    for x, y in zip(a, b, strict=True):  # in order, uncompensated (Python's sum() compensates): as JavaScript adds
        dot, na, nb = dot + x * y, na + x * x, nb + y * y
    c = min(1 - 1e-7, max(-1 + 1e-7, dot / math.sqrt(na * nb)))
    omega = math.acos(c)
    so = math.sin(omega)
    wa, wb = (1 - t, t) if abs(so) < 1e-6 else (math.sin((1 - t) * omega) / so, math.sin(t * omega) / so)
    return [_f32(wa * x + wb * y) for x, y in zip(a, b)]
