"""The training dataset: one Parquet file (table "train_faces") of face_id, PNG bytes, the
34-tag attribute vector and the split (train | holdout), for the reviewed faces that have a tags
row, in face_id order. The training loop reads only this file (pyarrow + Pillow), so a GPU box
needs nothing else from the pipeline.

The split is a pure function of the face_id (its hash against `train.holdout`), so a face never
changes sides when faces are added. Held-out faces are never trained on: render measures
memorisation against them. The file's metadata carries the data fingerprint (sha256 over every
row's face_id, PNG hash, attributes and split): a training run's identity includes it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from models.data import EXPORT_TABLE, FINGERPRINT_KEY, HOLDOUT, TRAIN
from tasks.detect.dataset import CropReader
from tasks.errors import DataError
from tasks.fileio import atomic_open, read_parquet, with_version
from tasks.tag.schema import MGM_TAGS, TAGS_TABLE, TAGS_VERSION

log = logging.getLogger(__name__)

EXPORT_VERSION = 2  # 2: split column, face_id order, data fingerprint
ROWS_PER_GROUP = 1024


def export_schema(fingerprint: str = "") -> pa.Schema:
    return with_version(pa.schema([
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("png", pa.binary(), nullable=False),
        pa.field("attributes", pa.list_(pa.int8(), len(MGM_TAGS)), nullable=False),  # MGM_TAGS order; -1 = unknown
        pa.field("split", pa.string(), nullable=False),  # train | holdout
    ]), EXPORT_TABLE, EXPORT_VERSION, {"moeflow.tag_order": json.dumps(list(MGM_TAGS)),
                                       FINGERPRINT_KEY.decode(): fingerprint})


@dataclass
class ExportSummary:
    faces: int = 0  # written
    holdout: int = 0  # of which held out from training
    reviewed: int = 0
    untagged: int = 0  # reviewed faces without a tags row
    no_crop: int = 0
    fingerprint: str = ""
    frequencies: dict = field(default_factory=dict)


def split_of(face_id: str, holdout: float) -> str:
    """holdout for the faces whose id hashes below the fraction, train for the rest."""
    bucket = int(hashlib.sha256(f"holdout|{face_id}".encode()).hexdigest()[:15], 16) / 16 ** 15
    return HOLDOUT if bucket < holdout else TRAIN


def read_tags(path: str | os.PathLike) -> dict[str, list[int]]:
    table = read_parquet(path, TAGS_TABLE, TAGS_VERSION)
    order = (table.schema.metadata or {}).get(b"moeflow.tag_order")
    if order is not None and json.loads(order) != list(MGM_TAGS):
        raise DataError(f"{path}: tag order differs from MGM_TAGS (rerun the tag stage)")
    return dict(zip(table.column("face_id").to_pylist(), table.column("attributes").to_pylist()))


def write_dataset(out_path: str | os.PathLike, face_ids: Sequence[str], images: Sequence[bytes],
                  attributes: Sequence[list[int]], splits: Sequence[str], metadata: dict[str, str] | None = None) -> str:
    """Write the dataset atomically, rows in the order given (face_id order); returns the data
    fingerprint. `images` are encoded crops Pillow reads (the column is named png; the reader
    decodes any format). `metadata`: more schema metadata (str -> str)."""
    attributes = [[int(v) for v in a] for a in attributes]  # numpy ints would print differently
    digest = hashlib.sha256()
    for fid, img, att, split in zip(face_ids, images, attributes, splits, strict=True):
        digest.update(f"{fid}|{hashlib.sha256(img).hexdigest()}|{att}|{split}\n".encode())
    fingerprint = digest.hexdigest()
    schema = export_schema(fingerprint)
    if metadata:
        schema = schema.with_metadata({**schema.metadata, **{k.encode(): v.encode() for k, v in metadata.items()}})
    table = pa.table({"face_id": list(face_ids), "png": list(images), "attributes": attributes,
                      "split": list(splits)}, schema=schema)
    with atomic_open(out_path, "wb") as f, pq.ParquetWriter(f, schema, compression="none") as w:
        w.write_table(table, row_group_size=ROWS_PER_GROUP)
    return fingerprint


def export_training_data(faces: pa.Table, crops_dir: str | os.PathLike, tags_path: str | os.PathLike,
                         out_path: str | os.PathLike, holdout: float = 0.0) -> ExportSummary:
    """Write the dataset atomically; `faces` are the reviewed faces (rows of faces.parquet)."""
    tags = read_tags(tags_path)
    s = ExportSummary(reviewed=faces.num_rows)
    reader = CropReader(faces, crops_dir, cache_shards=2)
    shard_of = dict(zip(faces.column("face_id").to_pylist(), faces.column("shard").to_pylist()))
    rows = []
    for fid in sorted(shard_of):
        if fid not in tags:
            s.untagged += 1
        elif not shard_of[fid] or fid not in reader:
            s.no_crop += 1
        else:
            rows.append(fid)
    if not rows:
        raise DataError(f"no reviewed face has a tags row in {tags_path} ({s.reviewed} reviewed, "
                        f"{s.untagged} untagged, {s.no_crop} without a crop): run the tag stage first")
    # Crops are read shard by shard (one decoded shard at a time), then written in face_id order.
    order = sorted(rows, key=lambda f: (shard_of[f], f))
    pngs = {fid: reader.read(fid) for fid in order}
    atts = [[int(v) if v is not None else -1 for v in tags[fid]] for fid in rows]
    splits = [split_of(fid, holdout) for fid in rows]
    s.faces, s.holdout = len(rows), splits.count(HOLDOUT)
    s.fingerprint = write_dataset(out_path, rows, [pngs[f] for f in rows], atts, splits)
    log.info("train dataset: %d faces (%d held out; %d reviewed, %d untagged, %d without crop), fingerprint %s -> %s",
             s.faces, s.holdout, s.reviewed, s.untagged, s.no_crop, s.fingerprint[:12], out_path)
    return s
