"""The detect stage's incremental state, kept inside the crops directory (a persistent
DVC out, so `dvc repro` does not delete it before a rerun):

    state-images.parquet  one row per processed image (keyed by image_id + params_key)
    state-faces.parquet   one row per face: the faces columns + pHash and chroma
    shard-*.parquet       the crops (tasks.detect.dataset.ShardWriter)

Rows enter the state only once their crops are in a written shard, so a killed run
loses at most the work since the last shard; unreferenced shards are deleted."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from tasks.detect.dataset import FACES_SCHEMA, ShardWriter
from tasks.detect.work import ImageResult
from tasks.errors import DataError
from tasks.fileio import read_parquet, with_version, write_parquet

log = logging.getLogger(__name__)

IMAGES_TABLE = "detect_images"
IMAGES_VERSION = 1
IMAGES_SCHEMA = with_version(pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("params_key", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # ok | bad
    pa.field("reason", pa.string()),  # bad: missing, unreadable, truncated, too_large, corrupt, unsupported, error
    pa.field("detail", pa.string()),
    pa.field("width", pa.int32()),  # after EXIF orientation
    pa.field("height", pa.int32()),
    pa.field("faces", pa.int32(), nullable=False),  # detected, kept or not
    pa.field("seconds", pa.float32(), nullable=False),
]), IMAGES_TABLE, IMAGES_VERSION)

STATE_FACES_TABLE = "detect_state_faces"
STATE_FACES_VERSION = 1
STATE_FACES_SCHEMA = with_version(pa.schema(
    [f for f in FACES_SCHEMA] + [pa.field("phash", pa.int64()), pa.field("chroma", pa.float32())]),
    STATE_FACES_TABLE, STATE_FACES_VERSION)

CHECKPOINT_SECONDS = 300.0


def _image_row(res: ImageResult, key: str) -> dict:
    return {"image_id": res.image_id, "params_key": key, "status": res.status, "reason": res.reason,
            "detail": res.detail, "width": res.width, "height": res.height, "faces": len(res.faces),
            "seconds": res.seconds}


def _face_rows(res: ImageResult, detector: str, size: int, key: str, writer: ShardWriter) -> list[dict]:
    rows = []
    for f in res.faces:
        shard = writer.add(f.face_id, f.png) if f.png is not None else None
        x, y, w, h = f.box
        x0, y0, x1, y1 = f.crop_box
        rows.append({
            "face_id": f.face_id, "image_id": res.image_id, "detector": detector, "score": f.score,
            "box_x": x, "box_y": y, "box_w": w, "box_h": h,
            "crop_x0": x0, "crop_y0": y0, "crop_x1": x1, "crop_y1": y1, "size": size,
            "monochrome": f.monochrome, "duplicate_of": None, "drop_reason": f.drop_reason,
            "hair_rgb": f.hair, "eye_rgb": f.eye, "skin_rgb": f.skin,
            "shard": shard, "params_key": key, "phash": f.phash, "chroma": f.chroma})
    return rows


class State:
    def __init__(self, crops_dir: str | Path, key: str, image_ids: set[str]):
        self.dir = Path(crops_dir)
        self.key = key
        self.images_path = self.dir / "state-images.parquet"
        self.faces_path = self.dir / "state-faces.parquet"
        self.images, self.faces = self._load(image_ids)
        self._pending_images: list[dict] = []
        self._pending_faces: list[dict] = []
        self._since_flush = 0
        self._last_save = time.monotonic()
        self.writer: Optional[ShardWriter] = None

    def _load(self, image_ids: set[str]) -> tuple[pa.Table, pa.Table]:
        """The live state: rows of the current params_key for images still in the manifest."""
        images, faces = IMAGES_SCHEMA.empty_table(), STATE_FACES_SCHEMA.empty_table()
        if self.images_path.exists() and self.faces_path.exists():
            try:
                images = read_parquet(self.images_path, IMAGES_TABLE, IMAGES_VERSION)
                faces = read_parquet(self.faces_path, STATE_FACES_TABLE, STATE_FACES_VERSION)
            except DataError as e:
                log.warning("ignoring unreadable detect state (%s): every image is redone", e)
                return IMAGES_SCHEMA.empty_table(), STATE_FACES_SCHEMA.empty_table()
        wanted = pa.array(sorted(image_ids), pa.string())
        images = images.filter(pc.and_(pc.equal(images["params_key"], self.key), pc.is_in(images["image_id"], wanted)))
        live = images["image_id"]
        faces = faces.filter(pc.and_(pc.equal(faces["params_key"], self.key), pc.is_in(faces["image_id"], live)))
        return images, faces

    @property
    def done(self) -> set[str]:
        return set(self.images["image_id"].to_pylist())

    def start(self, run_id: str, rows_per_shard: int) -> None:
        # The writer never flushes by itself: we flush between images, so that a shard on
        # disk always holds whole images and their rows can be committed with it.
        self.writer = ShardWriter(self.dir, run_id, rows_per_shard=1 << 62)
        self.rows_per_shard = rows_per_shard

    def add(self, res: ImageResult, detector: str, size: int) -> None:
        """Queue one image's rows; their crops go to the shard writer."""
        assert self.writer is not None
        self._pending_images.append(_image_row(res, self.key))
        rows = _face_rows(res, detector, size, self.key, self.writer)
        self._pending_faces.extend(rows)
        self._since_flush += sum(r["shard"] is not None for r in rows)
        if self._since_flush >= self.rows_per_shard:
            self.writer.flush()
            self._since_flush = 0
            self._commit()
        if time.monotonic() - self._last_save > CHECKPOINT_SECONDS:
            self.checkpoint()

    def _commit(self) -> None:
        if self._pending_images:
            self.images = pa.concat_tables([self.images, pa.Table.from_pylist(self._pending_images, IMAGES_SCHEMA)])
        if self._pending_faces:
            self.faces = pa.concat_tables([self.faces, pa.Table.from_pylist(self._pending_faces, STATE_FACES_SCHEMA)])
        self._pending_images, self._pending_faces = [], []

    def checkpoint(self) -> None:
        """Write every queued crop and row: what is done survives a kill."""
        if self.writer is not None:
            self.writer.flush()
        self._since_flush = 0
        self._commit()
        self.images = self.images.combine_chunks()
        self.faces = self.faces.combine_chunks()
        write_parquet(self.images_path, self.images, IMAGES_SCHEMA)
        write_parquet(self.faces_path, self.faces, STATE_FACES_SCHEMA)
        self._last_save = time.monotonic()

    def remove_orphans(self) -> int:
        """Delete shards no live face refers to (killed runs, superseded params) and temp files."""
        if not self.dir.exists():
            return 0
        used = set(s for s in self.faces["shard"].to_pylist() if s)
        removed = 0
        for p in self.dir.iterdir():
            orphan = p.name.startswith("shard-") and p.suffix == ".parquet" and p.name not in used
            if orphan or (p.name.startswith(".") and p.name.endswith(".tmp")):
                p.unlink()
                removed += 1
        return removed
