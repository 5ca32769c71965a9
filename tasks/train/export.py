"""The train stage's first step: the training dataset (tasks.artifacts.trainset) from the reviewed
faces, their crops and the tags: the reviewed faces that have a tags row and a stored crop, in
face_id order, each with its split."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import pyarrow as pa

from tasks.artifacts.faces import CropReader
from tasks.artifacts.tags import read_tags
from tasks.artifacts.trainset import HOLDOUT, TAGGER_KEY, TAGGER_REASON_KEY, split_of, write_dataset
from tasks.errors import DataError

log = logging.getLogger(__name__)


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
    tagger = {k.decode(): v for k, v in ((TAGGER_KEY, s.tagger), (TAGGER_REASON_KEY, s.tagger_reason)) if v}
    s.fingerprint = write_dataset(out_path, rows, [pngs[f] for f in rows], atts, splits, tagger)
    log.info("train dataset: %d faces (%d held out; %d reviewed, %d untagged, %d without crop), tags by %s, "
             "fingerprint %s -> %s", s.faces, s.holdout, s.reviewed, s.untagged, s.no_crop, s.tagger or "?",
             s.fingerprint[:12], out_path)
    return s
