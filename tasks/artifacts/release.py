"""The release manifest, the dataset without pixels, and the recorded boxes a rebuild crops.

`faces.parquet` (table "release_faces", and the same rows as `faces.jsonl`, one JSON object a
line): one row per kept, reviewed face, in face_id order. A face's image is named by the sha256 of
its original bytes, found again from its URL (or, for a folder import, its path under
`scrape.folder`, the post_id), and cut out again with the crop box, so a rebuild gives the same
face_id = sha256(sha256 | detector | crop box). The recorded boxes a rebuild crops are
tasks.artifacts.boxes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa

from tasks.artifacts.faces import BOX, CROP, crop_box_problem
from tasks.artifacts.faces import face_id as face_id_of
from tasks.artifacts.tags import MGM_TAGS
from tasks.errors import SourceError
from tasks.fileio import read_parquet, with_version

RELEASE_TABLE = "release_faces"
RELEASE_VERSION = 1
FORMAT = "moeflow-release"
HEADER_KEY = "moeflow.release"  # Parquet metadata: the header (license, notes, crop, tagger), as JSON
VERDICTS = ("fine", "unreviewed")  # false positives are never released

# name -> (type, what it is); the order of the columns
COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "face_id": (pa.string(), "sha256(sha256 | detector | crop_x0,crop_y0,crop_x1,crop_y1)"),
    "sha256": (pa.string(), "sha256 of the original image's bytes (= moeflow's image_id)"),
    "source": (pa.string(), "where the image was collected: danbooru, gelbooru, getchu, folder"),
    "post_id": (pa.string(), "the post's id at its source (a folder import: the file's path under the folder)"),
    "url": (pa.string(), "the image file's URL (a folder import: file:<its path under the folder>)"),
    "page_url": (pa.string(), "the post's page"),
    "artist": (pa.string(), "the artist as the source names them (space-separated when several)"),
    "rating": (pa.string(), "general | sensitive | questionable | explicit"),
    "tags": (pa.list_(pa.string()), "the post's tags at its source"),
    "title": (pa.string(), "getchu: the game"),
    "character": (pa.string(), "getchu: the character"),
    "width": (pa.int32(), "the original image's width, pixels"),
    "height": (pa.int32(), "the original image's height, pixels"),
    "detector": (pa.string(), "lbpcascade | animeface"),
    "score": (pa.float32(), "the detector's confidence"),
    "box_x": (pa.int32(), "the detected box: left, image pixels"),
    "box_y": (pa.int32(), "top"),
    "box_w": (pa.int32(), "width"),
    "box_h": (pa.int32(), "height"),
    "crop_x0": (pa.int32(), "the square crop box (may reach past the image: padded): left, inclusive"),
    "crop_y0": (pa.int32(), "top, inclusive"),
    "crop_x1": (pa.int32(), "right, exclusive"),
    "crop_y1": (pa.int32(), "bottom, exclusive"),
    "size": (pa.int32(), "side of the crop as trained on, pixels"),
    "verdict": (pa.string(), "the human review: fine (checked) | unreviewed (passed without a decision)"),
    "attributes": (pa.list_(pa.int8(), len(MGM_TAGS)),
                   "the 34 Make.Girls.Moe attributes in tag_order: 1, 0, or -1 (the tagger could not say)"),
}
NOT_NULL = {"face_id", "sha256", "source", "post_id", "detector", *BOX, *CROP, "size", "verdict", "attributes"}


def release_schema(header: dict | None = None) -> pa.Schema:
    fields = [pa.field(n, t, nullable=n not in NOT_NULL) for n, (t, _) in COLUMNS.items()]
    meta = {"moeflow.tag_order": json.dumps(list(MGM_TAGS))}
    if header is not None:
        meta[HEADER_KEY] = json.dumps(header, sort_keys=True, ensure_ascii=False)
    return with_version(pa.schema(fields), RELEASE_TABLE, RELEASE_VERSION, meta)


def jsonl_line(row: dict) -> str:
    return json.dumps({n: row.get(n) for n in COLUMNS}, ensure_ascii=False, separators=(",", ":")) + "\n"


# -- reading a release (the `release` scrape source) ------------------------------------------------

def release_file(path: str | os.PathLike) -> Path:
    """The manifest a `scrape.release` path names: the file itself, or faces.parquet / faces.jsonl
    in a directory."""
    p = Path(path)
    if p.is_dir():
        for name in ("faces.parquet", "faces.jsonl"):
            if (p / name).is_file():
                return p / name
        raise SourceError(f"scrape.release: {p} holds no release (faces.parquet or faces.jsonl): copy a release's "
                          "files there, or point scrape.release at its faces.parquet")
    if not p.is_file():
        raise SourceError(f"scrape.release: {p} does not exist (a release's faces.parquet or faces.jsonl)")
    return p


def _check_row(row: dict, where: str) -> dict:
    for name in NOT_NULL:
        if row.get(name) in (None, ""):
            raise SourceError(f"{where}: {name} is missing")
    sha = row["sha256"]
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise SourceError(f"{where}: sha256 {sha!r} is not 64 hex digits")
    try:
        box = tuple(int(row[c]) for c in CROP)
        for c in (*BOX, "size"):
            row[c] = int(row[c])
    except (TypeError, ValueError):
        raise SourceError(f"{where}: a box or size value is not an integer") from None
    if box[2] <= box[0] or box[3] <= box[1]:
        raise SourceError(f"{where}: crop box {box} is empty")
    if row.get("width") is not None and row.get("height") is not None:
        try:
            width, height = int(row["width"]), int(row["height"])
        except (TypeError, ValueError):
            raise SourceError(f"{where}: width or height is not an integer") from None
        if width < 1 or height < 1:
            raise SourceError(f"{where}: image size {width}x{height} is not a size")
        problem = crop_box_problem(box, width, height, turned=True)  # the file's size, before EXIF orientation
        if problem:
            raise SourceError(f"{where}: {problem}")
    if face_id_of(sha, row["detector"], box) != row["face_id"]:
        raise SourceError(f"{where}: face_id {row['face_id']!r} is not sha256(sha256|detector|crop box): "
                          "the row was changed, or is not a moeflow release")
    att = row["attributes"]
    if not isinstance(att, list) or len(att) != len(MGM_TAGS) or any(v not in (-1, 0, 1) for v in att):
        raise SourceError(f"{where}: attributes must be {len(MGM_TAGS)} values of 1, 0 or -1")
    if row["verdict"] not in VERDICTS:
        raise SourceError(f"{where}: verdict {row['verdict']!r} is not one of {', '.join(VERDICTS)}")
    row["post_id"] = str(row["post_id"])
    return row


def read_release(path: str | os.PathLike) -> tuple[list[dict], dict, Path]:
    """(rows, header, file) of a release manifest, every row checked: SourceError names the file
    and the row of the first problem (a release that was edited, cut or is not moeflow's)."""
    f = release_file(path)
    header: dict = {}
    if f.suffix == ".parquet":
        table = read_parquet(f, RELEASE_TABLE, RELEASE_VERSION)
        meta = table.schema.metadata or {}
        if HEADER_KEY.encode() in meta:
            header = json.loads(meta[HEADER_KEY.encode()])
        missing = [n for n in COLUMNS if n not in table.column_names]
        if missing:
            raise SourceError(f"{f}: columns missing: {', '.join(missing)}")
        order = meta.get(b"moeflow.tag_order")
        if order is not None and json.loads(order) != list(MGM_TAGS):
            raise SourceError(f"{f}: its tag order differs from this moeflow's 34 Make.Girls.Moe tags")
        raw = table.to_pylist()
        rows = [_check_row(r, f"{f}: row {i + 1}") for i, r in enumerate(raw)]
    else:
        side = f.with_name("release.json")
        if side.is_file():
            try:
                header = json.loads(side.read_text(encoding="utf-8"))
            except ValueError:
                raise SourceError(f"{side}: not JSON") from None
            if header.get("format") != FORMAT or int(header.get("schema_version", 0)) > RELEASE_VERSION:
                raise SourceError(f"{side}: not a {FORMAT} of schema version <= {RELEASE_VERSION}")
        rows = []
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise SourceError(f"{f}: line {n}: not JSON") from None
                if not isinstance(obj, dict):
                    raise SourceError(f"{f}: line {n}: not a JSON object")
                rows.append(_check_row(obj, f"{f}: line {n}"))
    if not rows:
        raise SourceError(f"{f}: the release holds no face")
    seen = set()
    for i, r in enumerate(rows):
        if r["face_id"] in seen:
            raise SourceError(f"{f}: row {i + 1}: face_id {r['face_id']} appears twice")
        seen.add(r["face_id"])
    return rows, header, f
