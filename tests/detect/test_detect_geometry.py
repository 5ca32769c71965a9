"""Crop geometry: enlargement about the centre and each border policy, exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.detect import geometry as g


def test_enlarge_1_5_about_centre():
    assert g.enlarge(100, 200, 100, 100, 1.5) == (75, 175, 225, 325)
    # odd size: side round-half-up(151.5) = 152, start x + floor((101-152)/2) = x - 26
    assert g.enlarge(10, 10, 101, 101, 1.5) == (-16, -16, 136, 136)
    # non-square boxes become squares on the longer side
    assert g.enlarge(0, 0, 40, 20, 1.0) == (0, -10, 40, 30)


def test_border_inside_is_unchanged_for_every_policy():
    for border in ("shift", "pad", "drop"):
        assert g.place((10, 10, 60, 60), 100, 100, border) == (10, 10, 60, 60)


def test_border_shift_moves_inside():
    assert g.place((-20, 70, 40, 130), 100, 100, "shift") == (0, 40, 60, 100)
    assert g.place((80, -5, 130, 45), 100, 100, "shift") == (50, 0, 100, 50)


def test_border_shift_box_larger_than_image_is_centred():
    # 150 wide box on a 100 wide image: centred (x0 = -25), vertical axis shifted inside
    assert g.place((-40, 10, 110, 160), 100, 300, "shift") == (-25, 10, 125, 160)


def test_border_pad_keeps_box_and_fills_white_or_edge():
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[:, :] = (10, 20, 30)
    assert g.place((-5, -5, 5, 5), 10, 10, "pad") == (-5, -5, 5, 5)
    white = g.cut(rgb, (-5, -5, 5, 5), "white")
    assert white.shape == (10, 10, 3)
    assert (white[:5, :] == 255).all() and (white[:, :5] == 255).all()
    assert (white[5:, 5:] == (10, 20, 30)).all()
    edge = g.cut(rgb, (-5, -5, 5, 5), "edge")
    assert (edge == (10, 20, 30)).all()


def test_border_drop():
    assert g.place((-1, 0, 50, 51), 100, 100, "drop") is None
    assert g.place((0, 0, 100, 100), 100, 100, "drop") == (0, 0, 100, 100)


def test_cut_is_exact_pixels():
    rgb = np.arange(20 * 30 * 3, dtype=np.uint32).reshape(20, 30, 3).astype(np.uint8)
    assert np.array_equal(g.cut(rgb, (3, 4, 13, 14)), rgb[4:14, 3:13])


def test_resize_to_size_area_and_lanczos():
    big = np.full((300, 300, 3), 77, np.uint8)
    assert g.resize(big, 128).shape == (128, 128, 3)
    assert (g.resize(big, 128) == 77).all()  # area averaging of a flat image is exact
    small = np.full((90, 90, 3), 200, np.uint8)
    assert g.resize(small, 128).shape == (128, 128, 3)


@given(st.integers(-300, 300), st.integers(-300, 300), st.integers(1, 250), st.floats(1.0, 3.0),
       st.integers(50, 400), st.integers(50, 400))
def test_shift_lands_inside_when_it_fits(x, y, w, scale, W, H):
    box = g.enlarge(x, y, w, w, scale)
    side = box[2] - box[0]
    placed = g.place(box, W, H, "shift")
    assert placed[2] - placed[0] == side and placed[3] - placed[1] == side  # never resized
    if side <= W:
        assert 0 <= placed[0] and placed[2] <= W
    if side <= H:
        assert 0 <= placed[1] and placed[3] <= H


@pytest.mark.parametrize("w", [24, 80, 99, 100, 101, 333])
def test_enlarge_side_and_centre(w):
    x0, y0, x1, y1 = g.enlarge(1000, 1000, w, w, 1.5)
    side = x1 - x0
    assert side == int(w * 1.5 + 0.5) and y1 - y0 == side
    assert abs((x0 + x1) / 2 - (1000 + w / 2)) <= 0.5
