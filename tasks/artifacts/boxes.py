"""The recorded boxes a rebuild crops (scrape -> detect).

`boxes.parquet` (table "recorded_faces", a scrape out): the released faces of every image the
`release` source kept, which detect crops as recorded instead of detecting, so a rebuild gives the
same face_ids (empty for other sources)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from tasks.artifacts.faces import BOX, CROP
from tasks.fileio import read_parquet, with_version, write_parquet

BOXES_TABLE = "recorded_faces"
BOXES_VERSION = 1
BOXES_SCHEMA = with_version(pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("face_id", pa.string(), nullable=False),
    pa.field("detector", pa.string(), nullable=False),
    pa.field("score", pa.float32()),
    *[pa.field(c, pa.int32(), nullable=False) for c in (*BOX, *CROP)],
    pa.field("size", pa.int32()),  # the release's crop side and padding: detect warns when its own differ
    pa.field("pad_fill", pa.string()),
]), BOXES_TABLE, BOXES_VERSION)


def write_boxes(path: str | os.PathLike, faces: dict[str, list[dict]], kept) -> int:
    """The recorded faces of the kept images, in (image_id, face_id) order."""
    rows = [{n: f.get(n) for n in BOXES_SCHEMA.names} | {"image_id": image}
            for image in sorted(set(faces) & set(kept)) for f in sorted(faces[image], key=lambda f: f["face_id"])]
    write_parquet(path, rows, BOXES_SCHEMA)
    return len(rows)


def read_boxes(path: str | os.PathLike | None) -> dict[str, list[dict]]:
    """image_id -> its recorded faces; {} when there is no file (a project before the release source)."""
    if path is None or not Path(path).exists():
        return {}
    out: dict[str, list[dict]] = {}
    for r in read_parquet(path, BOXES_TABLE, BOXES_VERSION).to_pylist():
        out.setdefault(r["image_id"], []).append(r)
    return out

