"""The train stage's first step: the training dataset (tasks.artifacts.trainset) from the reviewed
faces, their crops and the tags: the reviewed faces that have a tags row and a stored crop, in
face_id order, each with its split.

Memory stays bounded whatever the number of faces: the crops are read shard by shard (one decoded
shard at a time) and spooled to a temp file beside the output as they come, with each one's
offset, length and sha256 (the fingerprint needs every image's hash before the first row is
written); the dataset is then written in face_id order from the spool, one row group at a time
(tasks.artifacts.trainset.DatasetWriter)."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks.artifacts.faces import CropReader
from tasks.artifacts.tags import read_tags
from tasks.artifacts.trainset import (
    HOLDOUT,
    TAGGER_KEY,
    TAGGER_REASON_KEY,
    DatasetWriter,
    fingerprint_line,
    split_of,
)
from tasks.errors import DataError
from tasks.fileio import create_temp

log = logging.getLogger(__name__)
SPOOL_PREFIX = ".train-crops-"


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
    """Write the dataset atomically; `faces` are the reviewed faces (rows of faces.parquet)."""
    tags, meta = read_tags(tags_path)
    s = ExportSummary(reviewed=faces.num_rows, tagger=meta.get(b"moeflow.backend", b"").decode(),
                      tagger_reason=meta.get(b"moeflow.backend_reason", b"").decode())
    reader = CropReader(faces, crops_dir, cache_groups=1)
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
    splits = [split_of(fid, holdout) for fid in rows]
    s.faces, s.holdout = len(rows), splits.count(HOLDOUT)
    tagger = {k.decode(): v for k, v in ((TAGGER_KEY, s.tagger), (TAGGER_REASON_KEY, s.tagger_reason)) if v}
    where = Path(out_path).parent
    where.mkdir(parents=True, exist_ok=True)
    for old in where.glob(f"{SPOOL_PREFIX}*.tmp"):  # a killed export's
        log.info("train dataset: removing %s, left by an export that was killed", old)
        old.unlink()
    fd, spool = create_temp(where, prefix=SPOOL_PREFIX)
    try:
        offsets, lengths, digests = _spool(reader, rows, shard_of, fd)
        fp = hashlib.sha256()
        for i, fid in enumerate(rows):
            fp.update(fingerprint_line(fid, digests[i].tobytes().hex(), _attributes(tags[fid]), splits[i]))
        s.fingerprint = fp.hexdigest()
        with open(spool, "rb") as f, DatasetWriter(out_path, s.fingerprint, tagger) as w:
            for i, fid in enumerate(rows):
                f.seek(int(offsets[i]))
                w.add(fid, f.read(int(lengths[i])), _attributes(tags[fid]), splits[i])
    finally:
        os.close(fd)
        os.unlink(spool)
    log.info("train dataset: %d faces (%d held out; %d reviewed, %d untagged, %d without crop), tags by %s, "
             "fingerprint %s -> %s", s.faces, s.holdout, s.reviewed, s.untagged, s.no_crop, s.tagger or "?",
             s.fingerprint[:12], out_path)
    return s


def _spool(reader: CropReader, rows: list[str], shard_of: dict, fd: int) -> tuple[np.ndarray, ...]:
    """Append every row's crop to the file `fd`, shard by shard: (offset, length, sha256) per row."""
    n = len(rows)
    offsets, lengths = np.zeros(n, np.int64), np.zeros(n, np.int64)
    digests = np.zeros((n, 32), np.uint8)
    at = 0
    for i in sorted(range(n), key=lambda i: (shard_of[rows[i]], rows[i])):
        png = reader.read(rows[i])
        view = memoryview(png)
        while view:
            view = view[os.write(fd, view):]
        offsets[i], lengths[i] = at, len(png)
        digests[i] = np.frombuffer(hashlib.sha256(png).digest(), np.uint8)
        at += len(png)
    return offsets, lengths, digests


def _attributes(tags: list) -> list[int]:
    return [int(v) if v is not None else -1 for v in tags]
