"""Build faces datasets for the review tests without running a detector."""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tasks.artifacts.decisions import applied_decisions, load_decisions
from tasks.artifacts.faces import ShardWriter, face_id, read_faces, write_faces
from tasks.artifacts.images import MANIFEST_SCHEMA
from tasks.errors import ReviewError
from tasks.fileio import write_parquet
from tasks.params.review import ReviewConfig, ReviewOut
from tasks.review.run import ReviewInputs
from tasks.review.selection import reviewed_mask
from tests.conftest import ROOT

DETECTORS = ("lbpcascade", "animeface")



def select_reviewed(faces, decisions, unreviewed: str):
    """(the faces that pass review, each one's verdict): what the review stage writes, from a whole
    faces table (the stage itself reads the passing rows' columns at the end: read_selected)."""
    mask, verdicts = reviewed_mask(faces, applied_decisions(faces, decisions), unreviewed)
    return faces.filter(mask), verdicts

def png_bytes(path: Path) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def tiny_png(seed: int, size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256)).save(buf, "PNG")
    return buf.getvalue()


def noise_png(seed: int, side: int = 40) -> bytes:
    """A PNG of random pixels (it does not compress): memory tests count its bytes."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def face_row(image_id: str, detector: str, box: tuple[int, int, int, int], shard: str | None,
             score: float | None = 0.5, drop_reason: str | None = None) -> dict:
    x0, y0, x1, y1 = box
    return {"face_id": face_id(image_id, detector, box), "image_id": image_id, "detector": detector, "score": score,
            "box_x": x0, "box_y": y0, "box_w": x1 - x0, "box_h": y1 - y0, "crop_x0": x0, "crop_y0": y0,
            "crop_x1": x1, "crop_y1": y1, "size": x1 - x0, "monochrome": False,
            "duplicate_of": None, "drop_reason": drop_reason, "hair_rgb": None, "eye_rgb": None, "skin_rgb": None,
            "shard": shard, "params_key": "test"}


def build_faces(root: Path, crops: list[tuple[str, bytes]], *, drop_every: int = 0, rows_per_shard: int = 25,
                run: str = "t") -> list[dict]:
    """faces.parquet + crop shards under `root` from (name, png) pairs; returns the rows."""
    writer = ShardWriter(root / "crops", run, rows_per_shard=rows_per_shard)
    rows = []
    for i, (name, png) in enumerate(crops):
        image_id = hashlib.sha256(name.encode()).hexdigest()
        det = DETECTORS[i % 2]
        box = (i, i, i + 96, i + 96)
        fid = face_id(image_id, det, box)
        shard = writer.add(fid, png)
        drop = "duplicate" if drop_every and i % drop_every == drop_every - 1 else None
        rows.append(face_row(image_id, det, box, shard, score=round((i * 7919 % 1000) / 1000, 3), drop_reason=drop))
    writer.flush()
    write_faces(root / "faces.parquet", rows)
    return rows


def write_manifest(path: Path, image_ids: list[str]) -> None:
    now = datetime.now(timezone.utc)
    rows = [{"image_id": i, "pack": f"{i}.png", "offset": 0, "length": 1, "source": "folder", "post_id": str(n), "url": f"https://example.org/{n}.png",
             "page_url": f"https://example.org/post/{n}", "width": 512, "height": 512, "format": "PNG", "bytes": 1,
             "tags": [], "rating": None, "artist": None, "title": None, "character": None, "fetched_at": now}
            for n, i in enumerate(image_ids)]
    write_parquet(path, rows, MANIFEST_SCHEMA)


def params_file(root: Path, cfg: ReviewConfig, inp: ReviewInputs) -> Path:
    """The repo's params.yaml with the review section and its inputs pointed at `cfg` and `inp`,
    written to root/params.yaml (for the stage and merge commands)."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["detect"]["out"].update(faces=inp.faces, crops=inp.crops)
    params["scrape"]["out"]["manifest"] = inp.manifest
    params["review"].update(decisions=cfg.decisions, out=dict(vars(cfg.out)))
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def review_config(root: Path, **kw) -> ReviewConfig:
    out = ReviewOut(faces=str(root / "review/faces.parquet"), queue=str(root / "review/queue.csv"),
                    html=str(root / "review/queue.html"),
                    thumbs=str(root / "review/thumbs"), stats=str(root / "review/stats.json"),
                    metrics=str(root / "review/metrics.json"))
    decisions = root / "review/false_positives.csv"
    if not decisions.exists():
        decisions.parent.mkdir(parents=True, exist_ok=True)
        decisions.write_text("face_id,false_positive,reviewer,note\n")
    return ReviewConfig(decisions=str(decisions), out=out, **kw)


def inputs(root: Path) -> ReviewInputs:
    return ReviewInputs(faces=str(root / "faces.parquet"), crops=str(root / "crops"), manifest=str(root / "manifest.parquet"))


def reviewed_faces(cfg: ReviewConfig, inp: ReviewInputs):
    """The faces that pass review, by the review stage's own rule (tasks.review.selection), after
    validating the decisions CSV as the stage does; what it writes to cfg.out.faces."""
    _, decisions = load_decisions(cfg.decisions)
    return select_reviewed(read_faces(inp.faces), decisions, cfg.unreviewed)[0]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root, for 'nothing changed' checks."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def refused(root: Path, match: str):
    """The block raises a ReviewError matching `match` and leaves every file under root as it was."""
    before = snapshot(root)
    with pytest.raises(ReviewError, match=match):
        yield
    assert snapshot(root) == before


def read_queue(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def write_queue(path: Path, rows: list[dict], *, delimiter=",", newline="\r\n", bom=True) -> None:
    """Save queue rows as a spreadsheet would (BOM, CRLF; `;` files fully quoted)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator=newline,
                       quoting=csv.QUOTE_ALL if delimiter == ";" else csv.QUOTE_MINIMAL)
    w.writeheader()
    w.writerows(rows)
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + buf.getvalue().encode())


def cell_diff(thumb, png: bytes) -> float:
    """Mean absolute pixel difference between a sprite cell and the crop it should show."""
    from PIL import Image, ImageChops, ImageOps, ImageStat

    with Image.open(io.BytesIO(png)) as im:
        want = ImageOps.pad(im.convert("RGB"), thumb.size, color=(40, 40, 40))
    return sum(ImageStat.Stat(ImageChops.difference(thumb, want)).mean) / 3


def sprite_cell(jpg: bytes, index: int, size: int, columns: int):
    """Cell `index` (from 0) of a sprite page (its JPEG bytes)."""
    from PIL import Image

    box = ((index % columns) * size, (index // columns) * size, (index % columns + 1) * size, (index // columns + 1) * size)
    with Image.open(io.BytesIO(jpg)) as sheet:
        return sheet.convert("RGB").crop(box)


def sheet_pages(version_dir: Path) -> dict[int, dict]:
    """Every page of one version of the queue, from its part files: page -> {faces, sprite (JPEG
    bytes), columns, version, part}."""
    import base64

    from tasks.review.html import read_part_js

    pages = {}
    for js in sorted(version_dir.glob("part-*.js")):
        data = read_part_js(js.read_text(encoding="ascii"))
        for n, page in enumerate(data["pages"], start=data["first"]):
            pages[n] = {"faces": page["faces"], "sprite": base64.b64decode(page["sprite"]),
                        "columns": data["columns"], "version": data["version"], "part": data["part"]}
    return pages


def thumbnail_link(link: str) -> tuple[str, str, int, int]:
    """queue.csv's `thumbnail` (`queue.html#v=<version>&p=<page>&c=<cell>`) -> (sheet, version, page, cell)."""
    sheet, frag = link.split("#")
    kv = dict(part.split("=") for part in frag.split("&"))
    assert set(kv) == {"v", "p", "c"}, link
    return sheet, kv["v"], int(kv["p"]), int(kv["c"])


def crop_of(data: Path, fid: str) -> bytes:
    from tasks.artifacts.faces import CropReader

    return CropReader(data / "faces.parquet", data / "crops").read(fid)
