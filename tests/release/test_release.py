"""The pieces of a release and a rebuild, without DVC: detect crops recorded boxes to the same
face_ids and the same pixels; an image that leaves the manifest leaves the crop shards too; a
release manifest that was edited is refused, naming the row; the release source rejects bytes that
are not the released ones and keeps the rest; a folder import is rebuilt from its place in the folder."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from tasks.artifacts.boxes import write_boxes
from tasks.artifacts.faces import face_id, read_faces, read_shard
from tasks.artifacts.release import jsonl_line, read_release, release_schema
from tasks.artifacts.tags import MGM_TAGS
from tasks.detect.run import detect
from tasks.errors import SourceError
from tasks.fileio import write_parquet
from tasks.release.run import _image_url
from tasks.scrape.run import scrape
from tasks.scrape.sources import Extractor
from tests.support.detect import REAL, config, write_manifest
from tests.support.fakebooru import FakeBooru
from tests.support.scrape import OPTOUT_HEADER, manifest, rejected, scrape_cfg, stored

IMAGES = [REAL / n for n in ("afdr_detect_01.jpg", "afdr_detect_06.jpg", "s2p_23.png")]


def crops_of(out) -> dict[str, bytes]:
    crops = {}
    for shard in (out / "crops").glob("shard-*.parquet"):
        crops.update(read_shard(shard))
    return crops


def kept(out) -> list[dict]:
    return [r for r in read_faces(out / "faces.parquet").to_pylist() if r["drop_reason"] is None]


def test_recorded_boxes_give_the_same_faces_and_pixels(tmp_path):
    ids = write_manifest(tmp_path / "manifest.parquet", IMAGES, REAL)
    a = tmp_path / "a"
    detect(config(a, workers=1), tmp_path / "manifest.parquet", REAL, progress=False)
    faces = kept(a)
    assert len(faces) >= 3
    boxes = {}
    for f in faces:
        boxes.setdefault(f["image_id"], []).append({k: f[k] for k in (
            "face_id", "detector", "score", "box_x", "box_y", "box_w", "box_h", "crop_x0", "crop_y0", "crop_x1",
            "crop_y1", "size")} | {"pad_fill": "white"})
    write_boxes(tmp_path / "boxes.parquet", boxes, set(ids.values()))
    b = tmp_path / "b"  # another detector setting: recorded faces are cropped, never detected again
    detect(config(b, workers=1, min_neighbors=50), tmp_path / "manifest.parquet", REAL, progress=False,
           boxes=tmp_path / "boxes.parquet")
    again = kept(b)
    assert [f["face_id"] for f in again] == [f["face_id"] for f in faces]
    assert [f["detector"] for f in again] == [f["detector"] for f in faces]
    ca, cb = crops_of(a), crops_of(b)
    assert all(ca[f["face_id"]] == cb[f["face_id"]] for f in faces)  # byte for byte the same crops
    c = tmp_path / "c"
    detect(config(c, workers=1, min_neighbors=50), tmp_path / "manifest.parquet", REAL, progress=False)
    assert len(kept(c)) < len(faces)  # without the boxes that setting finds fewer: the boxes did it


def test_an_image_that_leaves_the_manifest_leaves_the_crop_shards(tmp_path):
    write_manifest(tmp_path / "manifest.parquet", IMAGES, REAL)
    out = tmp_path / "out"
    cfg = config(out, workers=1, shard_rows=1000)  # one shard holds every crop
    detect(cfg, tmp_path / "manifest.parquet", REAL, progress=False)
    before = read_faces(out / "faces.parquet").to_pylist()
    gone = {r["face_id"] for r in before if r["image_id"] == write_manifest(tmp_path / "x.parquet", IMAGES[:1],
                                                                             REAL)[IMAGES[0].name]}
    crops = crops_of(out)
    assert gone & set(crops)
    write_manifest(tmp_path / "manifest.parquet", IMAGES[1:], REAL)  # the first image was taken out
    s = detect(cfg, tmp_path / "manifest.parquet", REAL, progress=False)
    assert s.processed == 0  # nothing redone
    after = read_faces(out / "faces.parquet").to_pylist()
    assert not gone & {r["face_id"] for r in after}
    left = crops_of(out)
    assert not gone & set(left)
    assert left == {f: png for f, png in crops.items() if f not in gone}
    assert not gone & set(pq.read_table(out / "crops" / "state-faces.parquet").column("face_id").to_pylist())


def _row(sha: str, box=(10, 20, 138, 148)) -> dict:
    return {"face_id": face_id(sha, "lbpcascade", box), "sha256": sha, "source": "danbooru", "post_id": "1",
            "url": "https://danbooru.donmai.us/data/x.png", "page_url": "https://danbooru.donmai.us/posts/1",
            "artist": "someone", "rating": "general", "tags": ["1girl"], "title": None, "character": None,
            "width": 300, "height": 300, "detector": "lbpcascade", "score": 1.5, "box_x": 30, "box_y": 40, "box_w": 86,
            "box_h": 86, "crop_x0": box[0], "crop_y0": box[1], "crop_x1": box[2], "crop_y1": box[3], "size": 128,
            "verdict": "fine", "attributes": [0] * len(MGM_TAGS)}


def test_an_edited_release_manifest_is_refused_naming_the_row(tmp_path):
    good, bad = _row("ab" * 32), _row("cd" * 32)
    bad["crop_x1"] += 1  # the box no longer gives its face_id
    write_parquet(tmp_path / "faces.parquet", [good], release_schema({"crop": {"size": 128}}))
    rows, header, f = read_release(tmp_path)
    assert rows[0]["face_id"] == good["face_id"] and header["crop"]["size"] == 128 and f.name == "faces.parquet"
    write_parquet(tmp_path / "faces.parquet", [good, bad], release_schema())
    with pytest.raises(SourceError, match=r"faces.parquet: row 2: face_id .* is not sha256\(sha256\|detector\|crop box\)"):
        read_release(tmp_path / "faces.parquet")
    j = tmp_path / "j" / "faces.jsonl"
    j.parent.mkdir()
    j.write_text(jsonl_line(good) + '{"face_id": \n')
    with pytest.raises(SourceError, match=r"faces.jsonl: line 2: not JSON"):
        read_release(j.parent)
    j.write_text(jsonl_line(good) + jsonl_line({**good, "attributes": [2] * len(MGM_TAGS)}))
    with pytest.raises(SourceError, match="line 2: attributes must be 34 values"):
        read_release(j)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no release"):
        read_release(tmp_path / "empty")


def test_a_crop_box_far_larger_than_its_image_is_refused_naming_the_row(tmp_path):
    """A 400,000-px box with a face_id that matches it (issue 21, item 14): detect would try to
    allocate ~480 GB to cut it. The row names its image's size, so the release is refused when read."""
    good = _row("ab" * 32)
    huge = _row("cd" * 32, box=(0, 0, 400_000, 400_000))
    j = tmp_path / "faces.jsonl"
    j.write_text(jsonl_line(good) + jsonl_line(huge))
    with pytest.raises(SourceError) as e:
        read_release(j)
    assert str(e.value) == (f"{j}: line 2: crop box (0, 0, 400000, 400000) is 400000x400000 px, more than 4 x the "
                            "longer side of its 300x300 image")
    outside = _row("cd" * 32, box=(5000, 5000, 5100, 5100))
    j.write_text(jsonl_line(good) + jsonl_line(outside))
    with pytest.raises(SourceError, match=r"line 2: crop box \(5000, 5000, 5100, 5100\) lies outside its 300x300 image"):
        read_release(j)
    write_parquet(tmp_path / "faces.parquet", [good, {**huge, "width": 0}], release_schema())
    with pytest.raises(SourceError, match=r"faces.parquet: row 2: image size 0x300 is not a size"):
        read_release(tmp_path / "faces.parquet")
    # a box as detect makes it: up to 4 x the longer side, on a file whose size is before its EXIF
    # orientation (300 wide, 200 high, shown turned: the box reaches y 280)
    turned = {**_row("ef" * 32, box=(-500, -420, 700, 780)), "width": 300, "height": 200}
    j.write_text(jsonl_line(good) + jsonl_line(turned) + jsonl_line({**_row("12" * 32, box=(10, 150, 100, 280)),
                                                                     "width": 300, "height": 200}))
    assert len(read_release(j)[0]) == 3


def test_the_release_source_keeps_only_the_released_bytes(tmp_path):
    with FakeBooru() as srv:
        srv.add_real_posts([p.name for p in IMAGES])
        first = scrape_cfg(tmp_path / "first", srv.url)
        scrape(first, progress=False)
        rows = []
        for m in manifest(first):  # a release of one face per image, from the first collection
            r = _row(m["image_id"])
            rows.append({**r, "post_id": m["post_id"], "url": m["url"], "page_url": m["page_url"],
                         "width": m["width"], "height": m["height"]})
        write_parquet(tmp_path / "release.parquet", sorted(rows, key=lambda r: r["face_id"]), release_schema())
        changed = rows[0]
        name = changed["url"].rsplit("/", 1)[1]
        srv.files["original-" + name] = srv.files.pop(name)
        srv.add_variant(name, "original-" + name, "other bytes")
        named = rows[1]  # the rebuilder's optout.csv names these bytes: never fetched
        (tmp_path / "second").mkdir()
        (tmp_path / "second" / "optout.csv").write_text(
            f"{OPTOUT_HEADER}2026-11-30,takedown notice,,,,,,{named['sha256']},\n")
        cfg = scrape_cfg(tmp_path / "second", srv.url, source="release", release=str(tmp_path / "release.parquet"))
        mark = len(srv.log)
        s = scrape(cfg, progress=False)
        asked = [p for _, p, _ in srv.log[mark:]]
    assert s.rejected == {"sha256_mismatch": 1} and rejected(cfg)[changed["post_id"]] == "sha256_mismatch"
    assert s.skipped == {"optout": 1} and rejected(cfg)[named["post_id"]] == "optout"
    assert {m["image_id"] for m in manifest(cfg)} == {r["sha256"] for r in rows} - {changed["sha256"], named["sha256"]}
    assert changed["sha256"] not in stored(tmp_path / "second" / "images")
    assert "/posts.json" not in asked and sorted(asked) == sorted(["/robots.txt"] + [
        "/" + r["url"].split("/", 3)[3] for r in rows if r is not named])  # each released URL once, nothing else
    boxes = pq.read_table(tmp_path / "second" / "boxes.parquet").to_pylist()
    assert sorted(b["face_id"] for b in boxes) == sorted(r["face_id"] for r in rows if r not in (changed, named))


def test_a_folder_import_is_released_by_its_place_in_the_folder_and_rebuilt_from_it(tmp_path):
    src = tmp_path / "pictures"
    (src / "sub").mkdir(parents=True)
    for p in IMAGES:
        shutil.copyfile(p, src / "sub" / p.name)
    (src / "metadata.jsonl").write_text(f'{{"file_name": "sub/{IMAGES[0].name}", "id": 4242, "artist": "someone"}}\n')
    first = scrape_cfg(tmp_path / "first", "http://127.0.0.1:9", source="folder", folder=str(src))
    scrape(first, progress=False)
    got = manifest(first)
    assert {m["post_id"] for m in got} >= {"4242"}  # the sidecar's id, not its path: the URL must find it
    rows = [{**_row(m["image_id"]), "source": "folder", "post_id": m["post_id"], "url": _image_url(m["url"]),
             "page_url": None, "width": m["width"], "height": m["height"]} for m in got]
    assert sorted(r["url"] for r in rows) == sorted(f"file:sub/{p.name}" for p in IMAGES)
    assert _image_url("file:///home/me/a.png") is None  # a machine path is never published
    rows.append({**_row("ef" * 32), "source": "folder", "post_id": "x", "url": "file:../../outside.png"})
    write_parquet(tmp_path / "release.parquet", sorted(rows, key=lambda r: r["face_id"]), release_schema())
    (tmp_path / "outside.png").write_bytes(IMAGES[0].read_bytes())  # outside the folder: never read
    cfg = scrape_cfg(tmp_path / "second", "http://127.0.0.1:9", source="release", folder=str(src),
                     release=str(tmp_path / "release.parquet"))
    scrape(cfg, progress=False)
    again = manifest(cfg)
    assert sorted((m["image_id"], m["url"]) for m in again) == sorted((m["image_id"], m["url"]) for m in got)
    boxes = pq.read_table(tmp_path / "second" / "boxes.parquet").to_pylist()
    assert sorted(b["face_id"] for b in boxes) == sorted(r["face_id"] for r in rows[:-1])


def test_the_release_source_sends_no_booru_login(tmp_path, monkeypatch):
    """A release names many sites' hosts; a booru's API key is for its own site only."""
    monkeypatch.setenv("MOEFLOW_TEST_LOGIN", "alice_b")
    monkeypatch.setenv("MOEFLOW_TEST_KEY", "secret-key")
    write_parquet(tmp_path / "release.parquet", [_row("ab" * 32)], release_schema())
    over = {"login_env": "MOEFLOW_TEST_LOGIN", "api_key_env": "MOEFLOW_TEST_KEY"}
    booru = Extractor.registry["danbooru"](scrape_cfg(tmp_path / "a", "http://127.0.0.1:9", **over))
    assert booru.http.session.auth == ("alice_b", "secret-key")  # the same settings do log in to a booru
    release = Extractor.registry["release"](scrape_cfg(tmp_path / "b", "http://127.0.0.1:9", source="release",
                                                       release=str(tmp_path / "release.parquet"), **over))
    assert release.http.session.auth is None
    booru.http.close()
    release.http.close()
