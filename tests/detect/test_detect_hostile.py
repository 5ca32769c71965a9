"""Inputs that once gave silently wrong results or unbounded work in detect (issue 21): 16-bit
PNGs (item 6), the missing-cascade hint (item 13), a recorded crop box far larger than its
image (item 14)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.artifacts.faces import CropReader, read_faces
from tasks.detect.run import detect
from tasks.detect.work import load_image
from tasks.errors import ConfigError
from tests.support.detect import REAL, config, sha, write_manifest
from tests.support.png16 import write_png16

CLOSE_UP = REAL / "afdr_detect_07.jpg"  # one large face


def run(tmp, files, **kw):
    write_manifest(tmp / "manifest.parquet", files, tmp)
    cfg = config(tmp / "out", dedup_hamming=None, **kw)
    summary = detect(cfg, tmp / "manifest.parquet", tmp, progress=False)
    return summary, read_faces(cfg.out.faces), cfg


def faces_of(faces, crops, path) -> list[tuple]:
    """(box, crop box, crop PNG) of each face of one image."""
    reader = CropReader(faces, crops)
    rows = [r for r in faces.to_pylist() if r["image_id"] == sha(path)]
    return sorted(((r["box_x"], r["box_y"], r["box_w"], r["box_h"]), (r["crop_x0"], r["crop_y0"], r["crop_x1"],
                   r["crop_y1"]), reader.read(r["face_id"]) if r["drop_reason"] is None else None) for r in rows)


def test_a_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    """The same grey picture at 8 and at 16 bits per sample (v * 257): the same pixels, the same faces,
    the same crop bytes (Pillow's convert('RGB') clipped the 16-bit one to 0 and 255: no face)."""
    grey = np.asarray(Image.open(CLOSE_UP).convert("L"))
    Image.fromarray(grey, "L").save(tmp_path / "grey8.png")
    write_png16(tmp_path / "grey16.png", grey.astype(np.uint32) * 257)
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")  # Pillow sees 16-bit grey
    eight, sixteen = (np.asarray(load_image(str(tmp_path / n), 10**8)) for n in ("grey8.png", "grey16.png"))
    assert sixteen.dtype == np.uint8 and np.array_equal(eight, sixteen)
    summary, faces, cfg = run(tmp_path, [tmp_path / "grey8.png", tmp_path / "grey16.png"])
    a, b = (faces_of(faces, cfg.out.crops, tmp_path / n) for n in ("grey8.png", "grey16.png"))
    assert any(png is not None for *_, png in a)  # the 8-bit picture has a face
    assert [(box, crop) for box, crop, _ in a] == [(box, crop) for box, crop, _ in b]
    assert [png for *_, png in a] == [png for *_, png in b]


def test_16_bit_grey_scales_every_level_and_keeps_its_transparent_grey(tmp_path):
    levels = np.arange(256 * 64, dtype=np.int64).reshape(64, 256) * 65535 // (256 * 64 - 1)  # 0 .. 65535
    levels[0, 0] = 4321  # the tRNS grey: transparent, so white on the composite
    write_png16(tmp_path / "ramp.png", levels, transparent_grey=4321)
    rgb = np.asarray(load_image(str(tmp_path / "ramp.png"), 10**8))
    expected = np.round(levels * 255 / 65535).astype(np.uint8)
    expected[0, 0] = 255
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert len(np.unique(rgb)) == 256


@pytest.mark.parametrize("alpha", [False, True], ids=["rgb", "rgba"])
def test_a_16_bit_colour_png_gives_the_8_bit_pixels_and_faces(tmp_path, alpha):
    rgb = np.asarray(Image.open(CLOSE_UP).convert("RGB"))
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb8.png")
    wide = rgb.astype(np.uint32) * 257
    if alpha:  # opaque everywhere, except a transparent corner (white once composited)
        a = np.full(rgb.shape[:2] + (1,), 65535, np.uint32)
        a[:4, :4] = 0
        wide = np.concatenate([wide, a], axis=2)
    write_png16(tmp_path / "rgb16.png", wide)
    eight, sixteen = (np.asarray(load_image(str(tmp_path / n), 10**8)) for n in ("rgb8.png", "rgb16.png"))
    if alpha:
        assert (sixteen[:4, :4] == 255).all()
        sixteen, eight = sixteen.copy(), eight.copy()
        sixteen[:4, :4] = eight[:4, :4] = 0
    assert np.array_equal(eight, sixteen)
    _, faces, cfg = run(tmp_path, [tmp_path / "rgb8.png", tmp_path / "rgb16.png"])
    a, b = (faces_of(faces, cfg.out.crops, tmp_path / n) for n in ("rgb8.png", "rgb16.png"))
    assert a and [(box, crop) for box, crop, _ in a] == [(box, crop) for box, crop, _ in b]


def test_the_missing_cascade_hint_names_the_fetch_stage(tmp_path):
    write_manifest(tmp_path / "manifest.parquet", [CLOSE_UP], tmp_path)
    with pytest.raises(ConfigError) as e:
        detect(config(tmp_path, cascade=str(tmp_path / "nope.xml")), tmp_path / "manifest.parquet", tmp_path)
    message = str(e.value)
    assert "`dvc repro fetch`" in message and "`python -m tasks.fetch`" in message
    assert "scripts/" not in message and "\n" not in message


def test_a_recorded_box_far_larger_than_its_image_is_a_recorded_drop_not_an_error(tmp_path):
    """A recorded face (boxes.parquet, from a release) whose crop box is 400,000 px wide: cutting it
    would allocate ~480 GB. It is dropped as `box_too_large`, the image is `ok` (final: the next run
    does not try it again), and the image's sound box is cropped as recorded."""
    from tasks.artifacts.boxes import write_boxes
    from tasks.artifacts.faces import face_id

    ids = write_manifest(tmp_path / "manifest.parquet", [CLOSE_UP], REAL)
    image = ids[CLOSE_UP.name]
    w, h = Image.open(CLOSE_UP).size

    def recorded(box):
        x0, y0, x1, y1 = box
        return {"face_id": face_id(image, "lbpcascade", box), "detector": "lbpcascade", "score": 1.0, "box_x": x0,
                "box_y": y0, "box_w": x1 - x0, "box_h": y1 - y0, "crop_x0": x0, "crop_y0": y0, "crop_x1": x1,
                "crop_y1": y1, "size": 128, "pad_fill": "white"}

    sound, huge = (10, 10, 110, 110), (0, 0, 400_000, 400_000)
    write_boxes(tmp_path / "boxes.parquet", {image: [recorded(sound), recorded(huge)]}, {image})
    cfg = config(tmp_path / "out", workers=1)
    first = detect(cfg, tmp_path / "manifest.parquet", REAL, progress=False, boxes=tmp_path / "boxes.parquet")
    rows = pq.read_table(cfg.out.images).to_pylist()
    assert [(r["status"], r["reason"], r["width"], r["height"]) for r in rows] == [("ok", None, w, h)]
    faces = {(r["crop_x0"], r["crop_y0"], r["crop_x1"], r["crop_y1"]): r for r in read_faces(cfg.out.faces).to_pylist()}
    assert faces[huge]["drop_reason"] == "box_too_large" and faces[huge]["shard"] is None
    assert faces[sound]["drop_reason"] is None and CropReader(read_faces(cfg.out.faces), cfg.out.crops).read(
        faces[sound]["face_id"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.bad == {} and first.dropped == {"box_too_large": 1}
    again = detect(cfg, tmp_path / "manifest.parquet", REAL, progress=False, boxes=tmp_path / "boxes.parquet")
    assert again.processed == 0  # a recorded verdict, not an error retried every run


def test_box_scale_is_bounded_by_what_a_recorded_box_may_be():
    """detect never makes a crop box the release reader and the recorded-box check would refuse."""
    from tasks.artifacts.faces import MAX_BOX_SCALE
    from tasks.params.detect import DetectConfig
    from tasks.typed import build

    assert build(DetectConfig, {"box_scale": MAX_BOX_SCALE}, "detect").box_scale == MAX_BOX_SCALE
    with pytest.raises(ConfigError, match=r"^detect\.box_scale: must be between 1 and 4, got 4\.5$"):
        build(DetectConfig, {"box_scale": 4.5}, "detect")
