"""The training dataset (`train.out.data`, table "train_faces"): one Parquet file of face_id, the
encoded crop, the 34-tag attribute vector and the split (train | holdout), for the reviewed faces
that have a tags row, in face_id order. The train stage writes it (`write_dataset`); the training
loop (models.data) and render read it (`read_export`) with pyarrow and Pillow only, so a GPU box
needs nothing else from the pipeline.

The split is a pure function of the face_id (its hash against `train.holdout`), so a face never
changes sides when faces are added; held-out faces are never trained on (render measures
memorisation against them). The metadata carries the data fingerprint (sha256 over every row's
face_id, image hash, attributes and split: a training run's identity includes it) and the tag
backend that made the attributes, and why it ran."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.artifacts.tags import MGM_TAGS
from tasks.errors import DataError
from tasks.fileio import atomic_open, read_parquet, with_version

EXPORT_TABLE = "train_faces"
EXPORT_VERSION = 2  # 2: split column, face_id order, data fingerprint
FINGERPRINT_KEY = b"moeflow.fingerprint"
TAGGER_KEY, TAGGER_REASON_KEY = b"moeflow.tagger", b"moeflow.tagger_reason"
TRAIN, HOLDOUT = "train", "holdout"
ROWS_PER_GROUP = 1024


def export_schema(fingerprint: str = "") -> pa.Schema:
    return with_version(pa.schema([
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("png", pa.binary(), nullable=False),
        pa.field("attributes", pa.list_(pa.int8(), len(MGM_TAGS)), nullable=False),  # MGM_TAGS order; -1 = unknown
        pa.field("split", pa.string(), nullable=False),  # train | holdout
    ]), EXPORT_TABLE, EXPORT_VERSION, {"moeflow.tag_order": json.dumps(list(MGM_TAGS)),
                                       FINGERPRINT_KEY.decode(): fingerprint})


def split_of(face_id: str, holdout: float) -> str:
    """holdout for the faces whose id hashes below the fraction, train for the rest."""
    bucket = int(hashlib.sha256(f"holdout|{face_id}".encode()).hexdigest()[:15], 16) / 16 ** 15
    return HOLDOUT if bucket < holdout else TRAIN


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


@dataclass(frozen=True)
class Export:
    face_ids: list[str]
    pngs: list[bytes]
    attributes: np.ndarray  # (N, n_tags) int8, -1 = unknown
    split: np.ndarray  # (N,) str: train | holdout
    fingerprint: str  # sha256 over the rows (write_dataset)
    tagger: str = ""  # the tag backend that made the attributes (TAGGER_KEY; "" when not recorded)
    tagger_reason: str = ""  # why that backend ran

    def take(self, which: str) -> "Export":
        keep = np.flatnonzero(self.split == which)
        return Export([self.face_ids[i] for i in keep], [self.pngs[i] for i in keep], self.attributes[keep],
                      self.split[keep], self.fingerprint, self.tagger, self.tagger_reason)


def read_export(path: str | os.PathLike) -> Export:
    """The whole dataset in memory (DataError when it is missing, unreadable or of another version)."""
    t = read_parquet(path, EXPORT_TABLE, EXPORT_VERSION)
    meta = t.schema.metadata or {}
    version = int(meta.get(b"moeflow.schema_version", b"0"))
    if version != EXPORT_VERSION:
        raise DataError(f"{path}: training dataset schema version {version}, this moeflow reads {EXPORT_VERSION} "
                        "(rerun the train stage's export: dvc repro train)")
    attrs = np.asarray(t.column("attributes").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                       dtype=np.int8).reshape(t.num_rows, -1)
    return Export(t.column("face_id").to_pylist(), t.column("png").to_pylist(), attrs,
                  np.asarray(t.column("split").to_pylist()), meta.get(FINGERPRINT_KEY, b"").decode(),
                  meta.get(TAGGER_KEY, b"").decode(), meta.get(TAGGER_REASON_KEY, b"").decode())


def decode(png: bytes, size: int) -> np.ndarray:
    """An encoded crop as uint8 (size, size, 3) RGB, resized bicubically when it is another size."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.asarray(im, dtype=np.uint8)
