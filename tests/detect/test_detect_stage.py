"""The detect stage on real illustrations (../shared/data/real, read in place)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.artifacts.faces import CropReader, iter_kept_faces, read_faces
from tasks.detect.run import detect
from tasks.detect.work import load_image
from tasks.errors import ConfigError, Rejected
from tests.support.detect import REAL, config, sha, write_manifest

SUBSET = ["afdr_detect_07.jpg", "s2p_13.png", "s2p_16.png", "renpy_sylvie_green_normal.png", "afdr_detect_01.jpg"]
CLOSE_UP = REAL / "afdr_detect_07.jpg"  # one large face


def run(tmp: Path, files: list[Path], out: str = "out", **kw):
    write_manifest(tmp / "manifest.parquet", files, tmp)
    cfg = config(tmp / out, **kw)
    summary = detect(cfg, tmp / "manifest.parquet", tmp, progress=False)
    return summary, read_faces(cfg.out.faces), cfg


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    files = sorted(REAL.iterdir())
    assert len(files) == 46
    summary, faces, cfg = run(tmp, files)
    return tmp, files, summary, faces, cfg


def test_lbpcascade_finds_faces_in_most_real_illustrations(full):
    _, files, summary, faces, _ = full
    assert summary.images == 46 and summary.processed == 46 and not summary.bad
    detected = set(faces["image_id"].to_pylist())
    assert len(detected) >= 30, f"only {len(detected)} of 46 illustrations yield a face"
    assert summary.with_face >= 30
    assert summary.kept >= 40


def test_faces_table_and_crops(full):
    _, _, summary, faces, cfg = full
    rows = faces.to_pylist()
    reader = CropReader(faces, cfg.out.crops)
    for r in rows:
        if r["drop_reason"] in (None, "duplicate"):
            im = Image.open(io.BytesIO(reader.read(r["face_id"])))
            assert im.size == (128, 128) and im.format == "PNG"
            side = r["crop_x1"] - r["crop_x0"]
            assert side == r["crop_y1"] - r["crop_y0"] == int(max(r["box_w"], r["box_h"]) * 1.5 + 0.5)
            assert r["score"] is not None and r["hair_rgb"] is None
        if r["drop_reason"] == "too_small":
            assert min(r["box_w"], r["box_h"]) < 80 and r["shard"] is None
    kept = list(iter_kept_faces(cfg.out.faces, cfg.out.crops))
    assert len(kept) == summary.kept
    assert all(row["drop_reason"] is None for row, _ in kept)
    sheet = Image.open(cfg.out.contact_sheet)
    assert sheet.size[0] == 8 * 64


def test_monochrome_line_art_flagged_on_real_sketch(full):
    """style2paints' test_1.png is the uncoloured sketch of test_1.jpg."""
    _, files, _, faces, _ = full
    by_image = {}
    for r in faces.to_pylist():
        by_image.setdefault(r["image_id"], []).append(r)
    sketch = by_image[sha(REAL / "s2p_test_1.png")]
    coloured = by_image[sha(REAL / "s2p_test_1.jpg")]
    assert any(r["monochrome"] for r in sketch if r["drop_reason"] != "too_small")
    assert not any(r["monochrome"] for r in coloured)


def test_incremental_rerun_processes_nothing(full):
    tmp, files, first, faces, cfg = full
    summary = detect(cfg, tmp / "manifest.parquet", tmp, progress=False)
    assert summary.processed == 0 and summary.reused == 46
    again = read_faces(cfg.out.faces)
    assert again.drop(["shard"]).equals(faces.drop(["shard"]))


def test_new_images_only_and_param_change_recomputes(tmp_path):
    files = [REAL / n for n in SUBSET]
    s1, f1, cfg = run(tmp_path, files[:3])
    assert s1.processed == 3
    s2, f2, _ = run(tmp_path, files)
    assert (s2.processed, s2.reused) == (2, 3)
    assert set(f1["face_id"].to_pylist()) <= set(f2["face_id"].to_pylist())
    s3, f3, _ = run(tmp_path, files, box_scale=1.4)
    assert s3.processed == 5
    assert not set(f3["face_id"].to_pylist()) & set(f2["face_id"].to_pylist())
    shards = {p.name for p in Path(cfg.out.crops).glob("shard-*.parquet")}
    assert shards == {s for s in f3["shard"].to_pylist() if s}  # superseded shards deleted
    s4, f4, _ = run(tmp_path, files, box_scale=1.4, drop_monochrome=True, dedup_hamming=None)
    assert s4.processed == 0  # filter decisions are remade without redoing detection


def test_stable_ids_and_bytes_across_fresh_runs(tmp_path):
    files = [REAL / n for n in SUBSET]
    _, a, ca = run(tmp_path, files, out="a", workers=2)
    _, b, cb = run(tmp_path, files, out="b", workers=1)
    assert a["face_id"].to_pylist() == b["face_id"].to_pylist() and a.num_rows >= 4
    assert a.drop(["shard"]).equals(b.drop(["shard"]))
    ra, rb = CropReader(a, ca.out.crops), CropReader(b, cb.out.crops)
    for fid in a["face_id"].to_pylist():
        if fid in ra:
            assert ra.read(fid) == rb.read(fid)


def test_exif_rotation_honoured(tmp_path):
    src = Image.open(CLOSE_UP).convert("RGB")
    src.save(tmp_path / "upright.jpg", quality=95)
    rotated = src.transpose(Image.Transpose.ROTATE_90)  # stored on its side...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and EXIF says: rotate 90 degrees clockwise to display
    rotated.save(tmp_path / "exif.jpg", quality=95, exif=exif)
    _, faces, cfg = run(tmp_path, [tmp_path / "upright.jpg", tmp_path / "exif.jpg"], dedup_hamming=None)
    images = {r["image_id"]: r for r in pq.read_table(cfg.out.images).to_pylist()}
    up, ex = sha(tmp_path / "upright.jpg"), sha(tmp_path / "exif.jpg")
    assert (images[ex]["width"], images[ex]["height"]) == src.size
    boxes = {i: [(r["box_x"] + r["box_w"] / 2, r["box_y"] + r["box_h"] / 2) for r in faces.to_pylist()
                 if r["image_id"] == i and r["box_w"] >= 80] for i in (up, ex)}
    assert boxes[up] and boxes[ex]
    assert any(abs(a[0] - b[0]) < 8 and abs(a[1] - b[1]) < 8 for a in boxes[up] for b in boxes[ex])


def test_transparency_composited_on_white(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)  # fully transparent black
    rgba[10:20, 10:20] = (200, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    im = np.asarray(load_image(str(tmp_path / "t.png"), 10**8))
    assert im.shape == (40, 40, 3)
    assert (im[0, 0] == 255).all() and tuple(im[15, 15]) == (200, 0, 0)
    # a real transparent sprite: white background, and its face is found
    sprite = REAL / "renpy_sylvie_green_normal.png"
    assert Image.open(sprite).mode == "RGBA"
    assert (np.asarray(load_image(str(sprite), 10**8))[0, 0] == 255).all()


def test_bad_inputs_recorded_not_fatal(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(bytes(range(256)) * 40)
    data = CLOSE_UP.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (3000, 3000), "white").save(tmp_path / "huge.png")
    files = [tmp_path / "noise.jpg", tmp_path / "truncated.jpg", tmp_path / "huge.png", CLOSE_UP]
    summary, faces, cfg = run(tmp_path, files, max_pixels=5_000_000)
    reasons = {r["image_id"]: r["reason"] for r in pq.read_table(cfg.out.images).to_pylist()}
    assert reasons[sha(tmp_path / "noise.jpg")] == "unreadable"
    assert reasons[sha(tmp_path / "truncated.jpg")] == "truncated"
    assert reasons[sha(tmp_path / "huge.png")] == "too_large"
    assert reasons[sha(CLOSE_UP)] is None
    assert summary.bad == {"unreadable": 1, "truncated": 1, "too_large": 1}
    assert sha(CLOSE_UP) in set(faces["image_id"].to_pylist())
    with pytest.raises(Rejected):
        load_image(str(tmp_path / "missing.png"), 10**8)


def test_near_duplicate_marked_with_original(tmp_path):
    src = Image.open(CLOSE_UP).convert("RGB")
    smaller = src.resize((int(src.width * 0.9), int(src.height * 0.9)), Image.LANCZOS)
    smaller.save(tmp_path / "copy.jpg", quality=85)
    _, faces, _ = run(tmp_path, [CLOSE_UP, tmp_path / "copy.jpg"])
    rows = [r for r in faces.to_pylist() if r["box_w"] >= 80]
    orig = [r for r in rows if r["image_id"] == sha(CLOSE_UP)]
    copy = [r for r in rows if r["image_id"] == sha(tmp_path / "copy.jpg")]
    assert orig and copy
    assert all(r["drop_reason"] is None for r in orig)
    assert copy[0]["drop_reason"] == "duplicate" and copy[0]["duplicate_of"] in {r["face_id"] for r in orig}


def test_monochrome_drop_param(tmp_path):
    Image.open(CLOSE_UP).convert("L").save(tmp_path / "grey.png")
    _, faces, _ = run(tmp_path, [tmp_path / "grey.png"], drop_monochrome=True)
    big = [r for r in faces.to_pylist() if r["box_w"] >= 80]
    assert big and all(r["monochrome"] and r["drop_reason"] == "monochrome" for r in big)


def test_missing_or_bad_cascade_is_a_clear_error(tmp_path):
    write_manifest(tmp_path / "manifest.parquet", [CLOSE_UP], tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        detect(config(tmp_path, cascade=str(tmp_path / "nope.xml")), tmp_path / "manifest.parquet", tmp_path)
    (tmp_path / "bad.xml").write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ConfigError, match="not a readable OpenCV cascade"):
        detect(config(tmp_path, cascade=str(tmp_path / "bad.xml")), tmp_path / "manifest.parquet", tmp_path)
