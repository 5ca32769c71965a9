"""The train stage's first step: the training dataset (tasks.artifacts.trainset) from the reviewed
faces, their crops and the tags: the reviewed faces that have a tags row and a stored crop, in
face_id order, each with its split.

Memory stays bounded whatever the number of faces: the crops are read shard by shard (one decoded
shard at a time) and spooled to a temp file beside the output as they come, with each one's
offset, length and sha256 (the fingerprint needs every image's hash before the first row is
written); the dataset is then written in face_id order from the spool, one row group at a time
(tasks.artifacts.trainset.DatasetWriter). What is held per face is columnar: the ids in Arrow, the
attributes, split, offsets, lengths and hashes in numpy arrays."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.artifacts.faces import CropReader
from tasks.artifacts.tags import read_attributes
from tasks.artifacts.trainset import (
    HOLDOUT,
    TAGGER_KEY,
    TAGGER_REASON_KEY,
    TRAIN,
    DatasetWriter,
    fingerprint_line,
    split_of,
)
from tasks.errors import DataError
from tasks.fileio import create_temp

log = logging.getLogger(__name__)
SPOOL_PREFIX = ".train-crops-"
EACH_ROWS = 4096  # face_ids turned into Python str at a time


@dataclass
class ExportSummary:
    faces: int = 0  # written
    holdout: int = 0  # of which held out from training
    reviewed: int = 0
    untagged: int = 0  # reviewed faces without a tags row
    no_crop: int = 0
    fingerprint: str = ""
    frequencies: dict = field(default_factory=dict)
    tagger: str = ""  # the tag stage's backend (tags.parquet's moeflow.backend), and why it ran
    tagger_reason: str = ""


def export_training_data(faces: pa.Table, crops_dir: str | os.PathLike, tags_path: str | os.PathLike,
                         out_path: str | os.PathLike, holdout: float = 0.0) -> ExportSummary:
    """Write the dataset atomically; `faces` are the reviewed faces (their face_id and shard columns:
    rows of faces.parquet, each face once)."""
    tags, meta = read_attributes(tags_path)
    s = ExportSummary(reviewed=faces.num_rows, tagger=meta.get(b"moeflow.backend", b"").decode(),
                      tagger_reason=meta.get(b"moeflow.backend_reason", b"").decode())
    faces = faces.select(["face_id", "shard"])
    ids = faces.column("face_id")
    if pc.count_distinct(ids).as_py() != len(ids):
        raise DataError(f"the reviewed faces name a face more than once ({len(ids)} rows, "
                        f"{pc.count_distinct(ids).as_py()} face_ids): rerun `dvc repro review`")
    if len(ids) > 1 and not pc.all(pc.less_equal(ids[:-1], ids[1:])).as_py():  # written sorted: not copied
        faces = faces.sort_by("face_id")
    tag_at = pc.index_in(faces.column("face_id"), value_set=tags.column("face_id")).to_numpy(zero_copy_only=False)
    tagged = ~np.isnan(tag_at) if tag_at.dtype.kind == "f" else np.ones(len(tag_at), bool)
    stored = pc.fill_null(pc.not_equal(faces.column("shard"), ""), False).to_numpy(zero_copy_only=False)
    s.untagged = int((~tagged).sum())
    s.no_crop = int((tagged & ~stored).sum())
    keep = np.flatnonzero(tagged & stored)
    if not len(keep):
        raise DataError(f"no reviewed face has a tags row in {tags_path} ({s.reviewed} reviewed, "
                        f"{s.untagged} untagged, {s.no_crop} without a crop): run the tag stage first")
    rows = faces.take(keep)  # face_id order
    attributes = _attributes(tags.column("attributes").take(tag_at[keep].astype(np.int64)))
    del faces, tags, tag_at, tagged, stored, keep
    ids = rows.column("face_id")
    held = np.fromiter((split_of(fid, holdout) == HOLDOUT for fid in _each(ids)), bool, len(ids))
    s.faces, s.holdout = len(ids), int(held.sum())
    tagger = {k.decode(): v for k, v in ((TAGGER_KEY, s.tagger), (TAGGER_REASON_KEY, s.tagger_reason)) if v}
    where = Path(out_path).parent
    where.mkdir(parents=True, exist_ok=True)
    for old in where.glob(f"{SPOOL_PREFIX}*.tmp"):  # a killed export's
        log.info("train dataset: removing %s, left by an export that was killed", old)
        old.unlink()
    reader = CropReader(rows, crops_dir, cache_groups=1)
    fd, spool = create_temp(where, prefix=SPOOL_PREFIX)
    try:
        offsets, lengths, digests = _spool(reader, rows, fd)
        del reader
        fp = hashlib.sha256()
        for i, fid in enumerate(_each(ids)):
            fp.update(fingerprint_line(fid, digests[i].tobytes().hex(), attributes[i].tolist(), _split(held[i])))
        s.fingerprint = fp.hexdigest()
        with open(spool, "rb") as f, DatasetWriter(out_path, s.fingerprint, tagger) as w:
            for i, fid in enumerate(_each(ids)):
                f.seek(int(offsets[i]))
                w.add(fid, f.read(int(lengths[i])), attributes[i].tolist(), _split(held[i]))
    finally:
        os.close(fd)
        os.unlink(spool)
    log.info("train dataset: %d faces (%d held out; %d reviewed, %d untagged, %d without crop), tags by %s, "
             "fingerprint %s -> %s", s.faces, s.holdout, s.reviewed, s.untagged, s.no_crop, s.tagger or "?",
             s.fingerprint[:12], out_path)
    return s


def _each(column: pa.ChunkedArray) -> Iterator[str]:
    """The values of a string column as Python str, EACH_ROWS at a time."""
    for lo in range(0, len(column), EACH_ROWS):
        yield from column.slice(lo, EACH_ROWS).to_pylist()


def _split(held: bool) -> str:
    return HOLDOUT if held else TRAIN


def _spool(reader: CropReader, rows: pa.Table, fd: int) -> tuple[np.ndarray, ...]:
    """Append every row's crop to the file `fd`, in (shard, face_id) order (`rows` are in face_id
    order): (offset, length, sha256) per row."""
    n = rows.num_rows
    offsets, lengths = np.zeros(n, np.int64), np.zeros(n, np.int64)
    digests = np.zeros((n, 32), np.uint8)
    order = pc.sort_indices(pa.table({"shard": rows.column("shard"), "row": np.arange(n)}),
                            sort_keys=[("shard", "ascending"), ("row", "ascending")])
    at = 0
    for i, fid in zip(order.to_numpy(), _each(rows.column("face_id").take(order))):
        png = reader.read(fid)
        view = memoryview(png)
        while view:
            view = view[os.write(fd, view):]
        offsets[i], lengths[i] = at, len(png)
        digests[i] = np.frombuffer(hashlib.sha256(png).digest(), np.uint8)
        at += len(png)
    return offsets, lengths, digests


def _attributes(column: pa.ChunkedArray) -> np.ndarray:
    """(n, n_tags) int8 of a tags attributes column, -1 where a value is null (unknown)."""
    values = pc.fill_null(column.combine_chunks().flatten(), -1)
    return values.to_numpy(zero_copy_only=False).astype(np.int8).reshape(len(column), -1)
