"""Crop geometry: enlarge a detected box about its centre, keep it on the image (shift,
pad or drop), cut it out and resize it. Integer pixel boxes are (x0, y0, x1, y1), x1/y1
exclusive."""

from __future__ import annotations

import math
from typing import Literal, Optional

import cv2
import numpy as np

Box = tuple[int, int, int, int]
WHITE = (255, 255, 255)


def _round(v: float) -> int:
    """Round half up (Python's round() rounds half to even)."""
    return int(math.floor(v + 0.5))


def enlarge(x: int, y: int, w: int, h: int, scale: float) -> Box:
    """The square box of side round(scale * max(w, h)) about the centre of (x, y, w, h).

    x0 = x + floor((w - side) / 2), likewise y0; so a box enlarged by 1.5 from side 100
    starts 25 px up-left of it and ends 25 px down-right."""
    side = max(1, _round(scale * max(w, h)))
    x0 = x + math.floor((w - side) / 2)
    y0 = y + math.floor((h - side) / 2)
    return x0, y0, x0 + side, y0 + side


def _shift_axis(a0: int, a1: int, length: int) -> tuple[int, int]:
    side = a1 - a0
    if side > length:  # larger than the image: centre it, the rest is padded
        a0 = math.floor((length - side) / 2)
    elif a0 < 0:
        a0 = 0
    elif a1 > length:
        a0 = length - side
    return a0, a0 + side


def place(box: Box, width: int, height: int, border: Literal["shift", "pad", "drop"]) -> Optional[Box]:
    """The crop box under the border policy; None when `drop` and the box leaves the image.

    shift: moved inside the image along each axis (an axis the box is longer than is centred
    and padded); pad: unchanged, the outside is filled; drop: only boxes fully inside."""
    x0, y0, x1, y1 = box
    inside = x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height
    if inside or border == "pad":
        return box
    if border == "drop":
        return None
    x0, x1 = _shift_axis(x0, x1, width)
    y0, y1 = _shift_axis(y0, y1, height)
    return x0, y0, x1, y1


def cut(rgb: np.ndarray, box: Box, fill: Literal["white", "edge"] = "white") -> np.ndarray:
    """The pixels of `box` (which may extend past the image), padded with white or the edge."""
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = box
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if ix0 >= ix1 or iy0 >= iy1:  # entirely outside (cannot come from a detection)
        return np.full((y1 - y0, x1 - x0, 3), 255, np.uint8)
    inner = rgb[iy0:iy1, ix0:ix1]
    pads = (iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1)
    if not any(pads):
        return inner
    if fill == "edge":
        return cv2.copyMakeBorder(inner, *pads, cv2.BORDER_REPLICATE)
    return cv2.copyMakeBorder(inner, *pads, cv2.BORDER_CONSTANT, value=WHITE)


def resize(crop: np.ndarray, size: int) -> np.ndarray:
    """Square crop to size x size: area averaging when shrinking, Lanczos when enlarging."""
    h, w = crop.shape[:2]
    if (w, h) == (size, size):
        return np.ascontiguousarray(crop)
    interp = cv2.INTER_AREA if w > size else cv2.INTER_LANCZOS4
    return cv2.resize(crop, (size, size), interpolation=interp)
