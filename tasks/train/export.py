"""The training export: one Parquet file (table "train_faces") of face_id, PNG bytes and the
34-tag attribute vector, for the reviewed faces that have a tags row. The training loop reads
only this file (pyarrow + Pillow), so a GPU box needs nothing else from the pipeline."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from models.config import N_TAGS, ONE_HOT_GROUPS
from models.data import EXPORT_TABLE
from tasks.detect.dataset import CropReader
from tasks.errors import DataError
from tasks.fileio import atomic_open, read_parquet, with_version
from tasks.tag.schema import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, MGM_TAGS, TAGS_TABLE, TAGS_VERSION

log = logging.getLogger(__name__)

EXPORT_VERSION = 1
EXPORT_SCHEMA = with_version(pa.schema([
    pa.field("face_id", pa.string(), nullable=False),
    pa.field("png", pa.binary(), nullable=False),
    pa.field("attributes", pa.list_(pa.int8(), N_TAGS), nullable=False),  # MGM_TAGS order; -1 = unknown
]), EXPORT_TABLE, EXPORT_VERSION, {"moeflow.tag_order": json.dumps(list(MGM_TAGS))})
ROWS_PER_GROUP = 1024

# models/ keeps its own copy of the tag layout; it must agree with the tag stage's contract.
assert len(MGM_TAGS) == N_TAGS and ONE_HOT_GROUPS == ((HAIR_COLOR_SLICE.start, HAIR_COLOR_SLICE.stop),
                                                      (EYE_COLOR_SLICE.start, EYE_COLOR_SLICE.stop))


@dataclass
class ExportSummary:
    faces: int = 0  # written
    reviewed: int = 0
    untagged: int = 0  # reviewed faces without a tags row
    no_crop: int = 0
    frequencies: dict = field(default_factory=dict)


def read_tags(path: str | os.PathLike) -> dict[str, list[int]]:
    table = read_parquet(path, TAGS_TABLE, TAGS_VERSION)
    order = (table.schema.metadata or {}).get(b"moeflow.tag_order")
    if order is not None and json.loads(order) != list(MGM_TAGS):
        raise DataError(f"{path}: tag order differs from MGM_TAGS (rerun the tag stage)")
    return dict(zip(table.column("face_id").to_pylist(), table.column("attributes").to_pylist()))


def export_training_data(faces: pa.Table, crops_dir: str | os.PathLike, tags_path: str | os.PathLike,
                         out_path: str | os.PathLike) -> ExportSummary:
    """Write the export atomically; `faces` are the reviewed faces (rows of faces.parquet)."""
    tags = read_tags(tags_path)
    s = ExportSummary(reviewed=faces.num_rows)
    reader = CropReader(faces, crops_dir, cache_shards=2)
    rows = sorted(zip(faces.column("face_id").to_pylist(), faces.column("shard").to_pylist()),
                  key=lambda r: (r[1] or "", r[0]))
    with atomic_open(out_path, "wb") as f, pq.ParquetWriter(f, EXPORT_SCHEMA, compression="none") as w:
        batch: dict[str, list] = {"face_id": [], "png": [], "attributes": []}

        def emit():
            if batch["face_id"]:
                w.write_table(pa.table(batch, schema=EXPORT_SCHEMA))
                for v in batch.values():
                    v.clear()

        for fid, shard in rows:
            if fid not in tags:
                s.untagged += 1
                continue
            if not shard or fid not in reader:
                s.no_crop += 1
                continue
            batch["face_id"].append(fid)
            batch["png"].append(reader.read(fid))
            batch["attributes"].append([int(v) if v is not None else -1 for v in tags[fid]])
            s.faces += 1
            if len(batch["face_id"]) >= ROWS_PER_GROUP:
                emit()
        emit()
    if s.faces == 0:
        raise DataError(f"no reviewed face has a tags row in {tags_path} ({s.reviewed} reviewed, "
                        f"{s.untagged} untagged, {s.no_crop} without a crop): run the tag stage first")
    log.info("train export: %d faces (%d reviewed, %d untagged, %d without crop) -> %s", s.faces, s.reviewed,
             s.untagged, s.no_crop, out_path)
    return s
