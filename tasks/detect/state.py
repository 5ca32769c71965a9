"""The detect stage's incremental state, kept inside the crops directory (a persistent
DVC out, so `dvc repro` does not delete it before a rerun):

    state-images.parquet  one row per processed image (keyed by image_id + params_key), sorted by image_id
    state-faces.parquet   one row per face: the faces columns + pHash and chroma, sorted by face_id
    shard-<sha>.parquet   the crops, named by content (tasks.artifacts.faces.write_shard)
    state-delta-<base>-<n>-{faces,images}.parquet
                          while a run goes on: the rows added or changed since the last save

The files hold no clock, timing, process id or machine path, so two runs over the same
inputs leave the same bytes.

Results arrive in task order (tasks.detect.runner). Their crops collect in the *open shard*;
when it holds `shard_rows` crops (at an image boundary) it is written and the state is saved
with it. A checkpoint between (every CHECKPOINT_SECONDS, and when a run ends or is stopped)
writes the open shard as it is; the next run that has work *reopens* it (and any other
under-full shard, as long as the open shard stays under `shard_rows`) and rewrites it once
it is full. Which face lands in which shard therefore depends only on the order of the
images, never on when a run was interrupted or which worker finished first. Rows enter the
state only with their crops on disk, so a killed run loses at most the work since the last
save; files no row refers to are deleted after each save.

A save during a run appends a *delta* (the rows added or changed since the previous save: the
faces file, then the images file) instead of rewriting both tables, so its cost is a shard's
rows, not the whole state's. The run's last checkpoint (when it ends, fails or is stopped)
*compacts*: both tables are written whole, sorted, then the deltas deleted. A delta's name
carries the first 12 hex of the sha256 of the tables it applies to (`<base>`), so one left by a
kill between the compaction and the deletion no longer matches and is ignored, and one whose
images file is missing (killed between the two writes) is ignored with it: loading applies the
matching deltas in order over the tables, then compacts (or deletes the deltas that do not
apply), so a run never starts with a delta on disk. After a clean end the directory holds
exactly the files a run without deltas would leave.

An image whose outcome is final (ok, or a FINAL_REASONS reason) is done for its params key;
a transient one (TRANSIENT_REASONS) stays in the state for the report and is redone by the
next run."""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from pathlib import Path

import pyarrow as pa

from tasks.artifacts.faces import (
    FACES_SCHEMA,
    IMAGES_SCHEMA,
    IMAGES_TABLE,
    IMAGES_VERSION,
    SHARD_PREFIX,
    read_shard,
    write_shard,
)
from tasks.detect.work import ImageResult, is_final
from tasks.errors import DataError
from tasks.fileio import SCHEMA_VERSION_KEY, read_parquet, sha256_file, with_version, write_parquet

log = logging.getLogger(__name__)

STATE_FACES_TABLE = "detect_state_faces"
STATE_FACES_VERSION = 1
STATE_FACES_SCHEMA = with_version(pa.schema(
    [f for f in FACES_SCHEMA] + [pa.field("phash", pa.int64()), pa.field("chroma", pa.float32())]),
    STATE_FACES_TABLE, STATE_FACES_VERSION)

CHECKPOINT_SECONDS = 300.0


def _image_row(res: ImageResult, key: str) -> dict:
    return {"image_id": res.image_id, "params_key": key, "status": res.status, "reason": res.reason,
            "detail": res.detail, "width": res.width, "height": res.height, "faces": len(res.faces)}


def _face_row(res: ImageResult, f, detector: str, size: int, key: str) -> dict:
    x, y, w, h = f.box
    x0, y0, x1, y1 = f.crop_box
    return {"face_id": f.face_id, "image_id": res.image_id, "detector": f.detector or detector, "score": f.score,
            "box_x": x, "box_y": y, "box_w": w, "box_h": h,
            "crop_x0": x0, "crop_y0": y0, "crop_x1": x1, "crop_y1": y1, "size": size,
            "monochrome": f.monochrome, "duplicate_of": None, "drop_reason": f.drop_reason,
            "hair_rgb": f.hair, "eye_rgb": f.eye, "skin_rgb": f.skin,
            "shard": None, "params_key": key, "phash": f.phash, "chroma": f.chroma}


def _read_images(path: Path) -> pa.Table:
    """state-images.parquet; a v1 file (with timings) is read without its `seconds` column."""
    table = read_parquet(path, IMAGES_TABLE, IMAGES_VERSION)
    if int((table.schema.metadata or {}).get(SCHEMA_VERSION_KEY, b"0")) < IMAGES_VERSION:
        table = table.select([f.name for f in IMAGES_SCHEMA])
    return table


DELTA_PREFIX = "state-delta-"


def _base_of(images_path: Path, faces_path: Path) -> str:
    """The name part of the deltas that apply to these tables (their bytes' sha256)."""
    h = hashlib.sha256()
    for p in (images_path, faces_path):
        h.update(sha256_file(p).encode() if p.exists() else b"-")
    return h.hexdigest()[:12]


def _delta_files(crops_dir: Path, base: str) -> list[tuple[int, Path, Path]]:
    """(n, faces file, images file) of the complete deltas of `base`, in order."""
    found = []
    for p in crops_dir.glob(f"{DELTA_PREFIX}{base}-*-faces.parquet"):
        n = p.name[len(DELTA_PREFIX) + len(base) + 1:-len("-faces.parquet")]
        images = p.with_name(p.name.replace("-faces.parquet", "-images.parquet"))
        if n.isdigit() and images.exists():
            found.append((int(n), p, images))
    return sorted(found)


def read_saved(crops_dir: str | Path) -> tuple[dict[str, dict], dict[str, dict], list]:
    """The saved state as it stands on disk (a run may be going on): image_id -> row and face_id
    -> row, the tables with their matching deltas applied in order; and those deltas. DataError
    when a file is unreadable."""
    crops_dir = Path(crops_dir)
    images_path, faces_path = crops_dir / "state-images.parquet", crops_dir / "state-faces.parquet"
    images, faces = {}, {}
    if images_path.exists() and faces_path.exists():
        images = {r["image_id"]: r for r in _read_images(images_path).to_pylist()}
        faces = {r["face_id"]: r for r in read_parquet(faces_path, STATE_FACES_TABLE, STATE_FACES_VERSION).to_pylist()}
    deltas = _delta_files(crops_dir, _base_of(images_path, faces_path)) if crops_dir.is_dir() else []
    for _, faces_delta, images_delta in deltas:
        faces.update((r["face_id"], r) for r in read_parquet(faces_delta, STATE_FACES_TABLE,
                                                             STATE_FACES_VERSION).to_pylist())
        images.update((r["image_id"], r) for r in _read_images(images_delta).to_pylist())
    return images, faces, deltas


class State:
    def __init__(self, crops_dir: str | Path, key: str, image_ids: set[str], shard_rows: int):
        self.dir = Path(crops_dir)
        self.key = key
        self.shard_rows = shard_rows
        self.images_path = self.dir / "state-images.parquet"
        self.faces_path = self.dir / "state-faces.parquet"
        self.images: dict[str, dict] = {}  # image_id -> row
        self.faces: dict[str, dict] = {}  # face_id -> row
        self._open: dict[str, bytes] = {}  # the open shard: face_id -> PNG
        self._dirty_images: set[str] = set()  # changed since the last save (the next delta)
        self._dirty_faces: set[str] = set()
        self._deltas: list[Path] = []  # on disk, for the current base
        self._base = _base_of(self.images_path, self.faces_path)
        self._last_save = time.monotonic()
        if self._load(image_ids):
            self.compact()  # superseded rows gone from disk before their shards are (and the old crops with them)
        else:
            self._drop_deltas()  # none applies (stale, or without its images file)
            self.remove_orphans()

    def _load(self, image_ids: set[str]) -> bool:
        """The live state: rows of the current params_key for images still in the manifest whose
        shards exist. Returns whether anything on disk was left out (or came from deltas)."""
        try:
            images, faces, deltas = read_saved(self.dir)
        except DataError as e:
            log.warning("ignoring unreadable detect state (%s): every image is redone", e)
            return True
        if not images and not faces and not deltas:
            return False
        images, faces = list(images.values()), list(faces.values())
        live = {r["image_id"] for r in images if r["params_key"] == self.key and r["image_id"] in image_ids}
        lost = {r["image_id"] for r in faces if r["image_id"] in live and r["shard"]
                and not (self.dir / r["shard"]).is_file()}
        if lost:
            log.warning("detect: %d images have crops in shards missing from %s: they are redone", len(lost), self.dir)
        live -= lost
        self.images = {r["image_id"]: r for r in images if r["image_id"] in live and r["params_key"] == self.key}
        self.faces = {r["face_id"]: r for r in faces if r["image_id"] in live and r["params_key"] == self.key}
        self._purge({r["shard"] for r in faces if r["shard"] and r["face_id"] not in self.faces})
        return bool(deltas) or len(self.images) != len(images) or len(self.faces) != len(faces)

    def _purge(self, shards: set[str]) -> None:
        """Rewrite the shards that also hold crops of faces no longer live (an image left the manifest,
        say an opt-out took it out): the live crops move to a new content-named shard, and the old one,
        no longer named by any row, is deleted with the next save. A crop never outlives its image."""
        live = {r["shard"] for r in self.faces.values() if r["shard"]}
        mixed = sorted(shards & live)
        for name in mixed:
            crops = read_shard(self.dir / name)
            keep = {fid: crops[fid] for fid, r in self.faces.items() if r["shard"] == name and fid in crops}
            new = write_shard(self.dir, keep)
            for fid in keep:
                self.faces[fid]["shard"] = new
            self._dirty_faces.update(keep)
        if mixed:
            log.info("detect: rewrote %d crop shards without the crops of faces no longer in the data", len(mixed))

    @property
    def done(self) -> set[str]:
        """Images whose outcome stands (transient failures are redone)."""
        return {i for i, r in self.images.items() if is_final(r["status"], r["reason"])}

    @property
    def transient(self) -> set[str]:
        return set(self.images) - self.done

    def reopen(self) -> int:
        """Take under-full shards back into the open shard (smallest first, while it stays under
        `shard_rows`), to be rewritten when full. Returns the number of crops reopened."""
        sizes = collections.Counter(r["shard"] for r in self.faces.values() if r["shard"])
        for name, n in sorted(sizes.items(), key=lambda kv: (kv[1], kv[0])):
            if n >= self.shard_rows or len(self._open) + n >= self.shard_rows:
                continue
            crops = read_shard(self.dir / name)
            for fid, row in self.faces.items():
                if row["shard"] == name:
                    self._open[fid] = crops[fid]
        return len(self._open)

    def add(self, res: ImageResult, detector: str, size: int) -> None:
        """Record one image (replacing an earlier transient row); its crops join the open shard."""
        self.images[res.image_id] = _image_row(res, self.key)
        self._dirty_images.add(res.image_id)
        for f in res.faces:
            self.faces[f.face_id] = _face_row(res, f, detector, size, self.key)
            self._dirty_faces.add(f.face_id)
            if f.png is not None:
                self._open[f.face_id] = f.png
        if len(self._open) >= self.shard_rows:
            self._write_open()
            self._open.clear()
            self.save()
        elif time.monotonic() - self._last_save > CHECKPOINT_SECONDS:
            self.checkpoint()

    def _write_open(self) -> None:
        name = write_shard(self.dir, self._open)
        for fid in self._open:
            self.faces[fid]["shard"] = name
        self._dirty_faces.update(self._open)

    def checkpoint(self, final: bool = False) -> None:
        """Write the open shard as it is, then the state (a delta; compacted when `final`, the
        run's last): what is done survives a kill."""
        if self._open:
            self._write_open()
        if final:
            self.compact()
        else:
            self.save()

    def save(self) -> None:
        """Append the rows changed since the last save as a delta: faces first, then images (a
        delta without its images file is ignored when loading)."""
        n = len(self._deltas)
        stem = self.dir / f"{DELTA_PREFIX}{self._base}-{n:06d}"
        write_parquet(f"{stem}-faces.parquet", pa.Table.from_pylist(
            [self.faces[f] for f in sorted(self._dirty_faces)], STATE_FACES_SCHEMA), STATE_FACES_SCHEMA)
        write_parquet(f"{stem}-images.parquet", pa.Table.from_pylist(
            [self.images[i] for i in sorted(self._dirty_images)], IMAGES_SCHEMA), IMAGES_SCHEMA)
        self._deltas.append(Path(stem))
        self._dirty_faces.clear()
        self._dirty_images.clear()
        self._last_save = time.monotonic()
        self.remove_orphans()

    def compact(self) -> None:
        """Write both tables whole, then delete every delta (they no longer match the new base).
        Faces first: a kill between the two leaves new faces beside old images, and a face whose
        image has no row is not live (the image is redone)."""
        write_parquet(self.faces_path, self.faces_table(), STATE_FACES_SCHEMA)
        write_parquet(self.images_path, self.images_table(), IMAGES_SCHEMA)
        self._base = _base_of(self.images_path, self.faces_path)
        self._drop_deltas()
        self._dirty_faces.clear()
        self._dirty_images.clear()
        self._last_save = time.monotonic()
        self.remove_orphans()

    def _drop_deltas(self) -> None:
        if self.dir.exists():
            for p in self.dir.glob(f"{DELTA_PREFIX}*.parquet"):
                p.unlink()
        self._deltas = []

    def images_table(self) -> pa.Table:
        return pa.Table.from_pylist([self.images[i] for i in sorted(self.images)], IMAGES_SCHEMA)

    def faces_table(self) -> pa.Table:
        return pa.Table.from_pylist([self.faces[f] for f in sorted(self.faces)], STATE_FACES_SCHEMA)

    def remove_orphans(self) -> int:
        """Delete shards no saved face refers to (killed runs, superseded params) and temp files."""
        if not self.dir.exists():
            return 0
        used = {r["shard"] for r in self.faces.values() if r["shard"]}
        removed = 0
        for p in self.dir.iterdir():
            orphan = p.name.startswith(SHARD_PREFIX) and p.suffix == ".parquet" and p.name not in used
            if orphan or (p.name.startswith(".") and p.name.endswith(".tmp")):
                p.unlink()
                removed += 1
        if removed:
            log.info("detect: removed %d crop shards and temp files no current face uses", removed)
        return removed

