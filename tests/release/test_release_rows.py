"""The release stage on small inputs written with the artifacts' schemas, without DVC: its rows (face_id
order, the URLs as published, a face without a tags row left out, an unknown attribute as -1), the
card's counts, the refusals (a face whose image left the manifest, an image optout.csv names), and
what its Python heap grows by per face (tracemalloc: a batch of rows as Python objects, not all)."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.artifacts.images import MANIFEST_SCHEMA
from tasks.artifacts.release import COLUMNS, jsonl_line
from tasks.artifacts.reviewed import REVIEWED_SCHEMA
from tasks.artifacts.tags import MGM_TAGS, tags_schema
from tasks.errors import DataError
from tasks.fileio import write_parquet
from tasks.params.release import ReleaseConfig, ReleaseOut
from tasks.release import run as release_run
from tasks.release.run import ReleaseInputs, release

OPTOUT_HEADER = "date,reason,artist,tag,url,source,post_id,image_id,note\n"
BOX = {"box_x": 10, "box_y": 12, "box_w": 40, "box_h": 40, "crop_x0": 0, "crop_y0": 2, "crop_x1": 60, "crop_y1": 62}


def sha(c: str) -> str:
    return c * 64


def image(image_id: str, **kw) -> dict:
    row = {"image_id": image_id, "pack": "packs/p0.pack", "offset": 0, "length": 1, "source": "folder",
           "post_id": "p", "url": None, "page_url": None, "width": 640, "height": 480, "format": "PNG",
           "bytes": 1, "tags": None, "rating": None, "artist": None, "title": None, "character": None,
           "fetched_at": None}
    return row | kw


def face(face_id: str, image_id: str) -> dict:
    return {"face_id": face_id, "image_id": image_id, "detector": "lbpcascade", "score": 0.5, **BOX, "size": 128,
            "monochrome": False, "duplicate_of": None, "drop_reason": None, "hair_rgb": None, "eye_rgb": None,
            "skin_rgb": None, "shard": "shard-0.parquet", "params_key": "k", "verdict": "fine"}


def tag_row(face_id: str, attributes: list) -> dict:
    return {"face_id": face_id, "backend": "colour", **{t: None for t in MGM_TAGS}, "attributes": attributes}


def write_inputs(root: Path, images: list[dict] | pa.Table, faces: list[dict] | pa.Table,
                 tags: list[dict] | pa.Table, optout: str = OPTOUT_HEADER) -> ReleaseInputs:
    root.mkdir(parents=True, exist_ok=True)
    write_parquet(root / "manifest.parquet", images, MANIFEST_SCHEMA)
    write_parquet(root / "faces.parquet", faces, REVIEWED_SCHEMA)
    write_parquet(root / "tags.parquet", tags, tags_schema(metadata={"moeflow.backend": "colour",
                                                                     "moeflow.backend_reason": "a test"}))
    (root / "optout.csv").write_text(optout)
    (root / "optout_log.jsonl").write_text("")
    spec = {"format": 1, "settings": {"detector": "lbpcascade", "pad_fill": "edge", "size": 128}}
    (root / "detector.json").write_text(json.dumps(spec))
    return ReleaseInputs(manifest=str(root / "manifest.parquet"), rejected=str(root / "rejected.parquet"),
                         optout_log=str(root / "optout_log.jsonl"), optout=str(root / "optout.csv"),
                         faces=str(root / "faces.parquet"), tags=str(root / "tags.parquet"),
                         detector=str(root / "detector.json"))


def config(out: Path) -> ReleaseConfig:
    return ReleaseConfig(out=ReleaseOut(faces=str(out / "faces.parquet"), jsonl=str(out / "faces.jsonl"),
                                        header=str(out / "release.json"), card=str(out / "README.md")))


def released(face_id: str, img: dict, url, attributes: list[int]) -> dict:
    return {"face_id": face_id, "sha256": img["image_id"], "source": img["source"], "post_id": img["post_id"],
            "url": url, "page_url": img["page_url"], "artist": img["artist"], "rating": img["rating"],
            "tags": img["tags"] or [], "title": None, "character": None, "width": 640, "height": 480,
            "detector": "lbpcascade", "score": 0.5, **BOX, "size": 128, "verdict": "fine", "attributes": attributes}


def test_the_rows_in_face_id_order_as_published(tmp_path):
    web = image(sha("a"), source="danbooru", post_id="7", url="https://example.org/a.png",
                page_url="https://example.org/posts/7", tags=["blush", "smile"], rating="general", artist="x y")
    folder = image(sha("b"), post_id="dir/b.png", url="file:dir/b.png")
    absolute = image(sha("c"), post_id="c.png", url="file:///abs/c.png")
    unused = image(sha("d"))
    att = [1, 0] * 17
    unknown = [None] + att[1:]
    inputs = write_inputs(tmp_path / "in", [unused, absolute, folder, web],
                          [face("f3", sha("c")), face("f1", sha("a")), face("f2", sha("b")), face("f0", sha("a"))],
                          [tag_row("f1", att), tag_row("f2", unknown), tag_row("f3", att)])
    out = tmp_path / "out"
    s = release(config(out), inputs)
    want = [released("f1", web, web["url"], att), released("f2", folder, "file:dir/b.png", [-1] + att[1:]),
            released("f3", absolute, None, att)]  # f0 has no tags row; an absolute file: URL names a machine
    assert (out / "faces.jsonl").read_text() == "".join(jsonl_line(r) for r in want)
    assert pq.read_table(out / "faces.parquet").to_pylist() == [{n: r[n] for n in COLUMNS} for r in want]
    assert (s.faces, s.images, s.untagged) == (3, 3, 1)
    assert s.by_source == {"danbooru": 1, "folder": 2} and s.by_verdict == {"fine": 3}
    header = json.loads((out / "release.json").read_text())
    assert (header["faces"], header["images"], header["crop"]["size"]) == (3, 3, 128)
    card = (out / "README.md").read_text()
    assert "| danbooru | 1 | 1 |\n| folder | 2 | 2 |" in card
    assert "| None | 2 |\n| general | 1 |" in card  # images by rating
    assert f"| {MGM_TAGS[0]} | 1.000 | 2 |" in card and f"| {MGM_TAGS[1]} | 0.000 | 3 |" in card


def test_a_face_whose_image_left_the_manifest_is_refused(tmp_path):
    inputs = write_inputs(tmp_path, [image(sha("a"))], [face("f1", sha("a")), face("f2", sha("e"))],
                          [tag_row("f1", [0] * 34), tag_row("f2", [0] * 34)])
    with pytest.raises(DataError, match="face f2 has an image the manifest does not hold"):
        release(config(tmp_path / "out"), inputs)


def test_an_image_optout_csv_names_is_refused(tmp_path):
    inputs = write_inputs(tmp_path, [image(sha("a")), image(sha("b"), source="danbooru", post_id="9")],
                          [face("f1", sha("a"))], [tag_row("f1", [0] * 34)],
                          OPTOUT_HEADER + "2026-11-30,the artist's e-mail,,,,danbooru,9,,\n")
    with pytest.raises(DataError, match=f"still holds 1 images .* \\(first {sha('b')[:12]}\\)"):
        release(config(tmp_path / "out"), inputs)


def synthetic(root: Path, n: int) -> ReleaseInputs:
    """n faces on n // 2 images (http URLs, a dozen post tags each), every face tagged."""
    rng = np.random.default_rng(n)
    m = n // 2
    ids = [f"{i:064x}" for i in range(m)]
    images = pa.table({
        "image_id": ids, "pack": ["packs/p0.pack"] * m, "offset": np.arange(m), "length": np.ones(m, np.int64),
        "source": ["danbooru"] * m, "post_id": [str(i) for i in range(m)],
        "url": [f"https://example.org/data/{i}.png" for i in range(m)],
        "page_url": [f"https://example.org/posts/{i}" for i in range(m)],
        "width": np.full(m, 640, np.int32), "height": np.full(m, 480, np.int32), "format": ["PNG"] * m,
        "bytes": np.ones(m, np.int64), "tags": [[f"tag_{j}" for j in rng.integers(0, 300, 12)] for _ in range(m)],
        "rating": ["general"] * m, "artist": [f"artist_{i % 50}" for i in range(m)], "title": [None] * m,
        "character": [None] * m, "fetched_at": pa.nulls(m, pa.timestamp("us", tz="UTC"))}).cast(MANIFEST_SCHEMA)
    fids = [f"f{i:063x}" for i in range(n)]
    columns = {"face_id": fids, "image_id": [ids[i // 2] for i in range(n)], "detector": ["lbpcascade"] * n,
               "score": np.full(n, 0.5, np.float32)}
    columns |= {k: np.full(n, v, np.int32) for k, v in BOX.items()}
    columns |= {"size": np.full(n, 128, np.int32), "monochrome": np.zeros(n, bool), "duplicate_of": [None] * n,
                "drop_reason": [None] * n}
    columns |= {c: pa.nulls(n, REVIEWED_SCHEMA.field(c).type) for c in ("hair_rgb", "eye_rgb", "skin_rgb")}
    columns |= {"shard": ["shard-0.parquet"] * n, "params_key": ["k"] * n, "verdict": ["fine"] * n}
    faces = pa.table(columns).cast(REVIEWED_SCHEMA)
    tags = pa.table({"face_id": fids, "backend": ["colour"] * n, **{t: pa.nulls(n, pa.float32()) for t in MGM_TAGS},
                     "attributes": pa.FixedSizeListArray.from_arrays(
                         pa.array(rng.integers(-1, 2, n * len(MGM_TAGS)).astype(np.int8)), len(MGM_TAGS))})
    return write_inputs(root, images, faces, tags.cast(tags_schema()))


def test_the_python_heap_holds_a_batch_of_rows_not_every_row(tmp_path, monkeypatch):
    """Python's peak allocation releasing 4N faces against N: a few hundred bytes a face at most
    (numpy row numbers; the columns are Arrow's), where a dict a row (~4 KB a face) would be far more."""
    monkeypatch.setattr(release_run, "BATCH", 256)
    small, large = 1500, 6000
    peaks = {}
    for n in (small, large):
        inputs = synthetic(tmp_path / f"in{n}", n)
        release(config(tmp_path / "warm"), inputs)  # imports and caches before measuring
        shutil.rmtree(tmp_path / "warm")
        tracemalloc.start()
        try:
            s = release(config(tmp_path / f"out{n}"), inputs)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert s.faces == n
    assert (peaks[large] - peaks[small]) / (large - small) < 500, peaks
