"""The detect stage's incremental state, kept inside the crops directory (a persistent
DVC out, so `dvc repro` does not delete it before a rerun):

    state-images.parquet  one row per processed image (keyed by image_id + params_key), sorted by image_id
    state-faces.parquet   one row per face: the faces columns + pHash and chroma, sorted by face_id
    shard-<sha>.parquet   the crops, named by content (tasks.artifacts.faces.write_shard)
    state-delta-<base>-<n>-{faces,images}.parquet
                          while a run goes on: the rows added or changed since the last save

The files hold no clock, timing, process id or machine path, so two runs over the same
inputs leave the same bytes.

In memory the saved rows stay columnar (Arrow tables, a few hundred bytes a face); only the
rows added or changed since the last save and the open shard's rows are Python objects, so
the Python part is bounded by `shard_rows` and the time between saves, not by the number of
images.

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

import hashlib
import logging
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.artifacts.faces import (
    FACES_SCHEMA,
    IMAGES_SCHEMA,
    IMAGES_TABLE,
    IMAGES_VERSION,
    SHARD_PREFIX,
    read_shard,
    write_shard,
)
from tasks.detect.work import FINAL_REASONS, ImageResult
from tasks.errors import DataError
from tasks.fileio import SCHEMA_VERSION_KEY, parquet_file, sha256_file, with_version, write_parquet

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


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` as exactly `schema`: its columns in order, its types (down to the names of list
    items: Parquet reads them back as `element`, and the Arrow schema a file stores holds them),
    its metadata."""
    return table.select(schema.names).cast(schema).replace_schema_metadata(schema.metadata)


def _read(path: Path, table_name: str, max_version: int) -> pa.Table:
    """A state file, read a column at a time with each column's decoding buffers handed back
    before the next: the read costs about a column beside the table, not the table twice over."""
    pf = parquet_file(path, table_name, max_version)
    try:
        columns = []
        for name in pf.schema_arrow.names:
            columns.append(pf.read(columns=[name], use_threads=False).column(0))
            pa.default_memory_pool().release_unused()
        return pa.table(columns, schema=pf.schema_arrow)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path} is not a readable Parquet file: {e}") from None
    finally:
        pf.close()


def _read_images(path: Path) -> pa.Table:
    """state-images.parquet; a v1 file (with timings) is read without its `seconds` column."""
    table = _read(path, IMAGES_TABLE, IMAGES_VERSION)
    if int((table.schema.metadata or {}).get(SCHEMA_VERSION_KEY, b"0")) < IMAGES_VERSION:
        table = table.select([f.name for f in IMAGES_SCHEMA])
    return _conform(table, IMAGES_SCHEMA)


def _read_faces(path: Path) -> pa.Table:
    return _conform(_read(path, STATE_FACES_TABLE, STATE_FACES_VERSION), STATE_FACES_SCHEMA)


def last_per_key(table: pa.Table, key: str) -> pa.Table:
    """One row per value of `key`: the last row of each, as updating a dict row by row would
    leave it (in the order of those rows). The table itself when its keys are unique."""
    if table.num_rows == pc.count_distinct(table[key], mode="all").as_py():
        return table
    numbered = table.select([key]).append_column("row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    last = numbered.group_by(key, use_threads=False).aggregate([("row", "max")])["row_max"].to_numpy()
    return table.take(pa.array(np.sort(last)))


def sorted_by(table: pa.Table, key: str) -> pa.Table:
    """`table` sorted by its unique `key`, each column one chunk: the table itself when it already
    is (no copy). Sorted a column at a time, so the copy costs one column beside the table, not a
    second table."""
    col = table[key]
    if table.num_rows > 1 and not pc.all(pc.less(col[:-1], col[1:])).as_py():
        order = pc.sort_indices(col)
        for i in range(table.num_columns):
            table = table.set_column(i, table.schema.field(i), table.column(i).take(order))
    for i in range(table.num_columns):
        if table.column(i).num_chunks != 1:
            table = table.set_column(i, table.schema.field(i), pa.chunked_array([table.column(i).combine_chunks()]))
    return table


def _ids(values: pa.Array | pa.ChunkedArray | Iterable[str]) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array(sorted(values), pa.string())


def _equal(col: pa.ChunkedArray, value: str) -> pa.ChunkedArray:
    """col == value, false (not null) where col is null."""
    return pc.fill_null(pc.equal(col, pa.scalar(value, col.type)), False)


def _keep(table: pa.Table, mask) -> pa.Table:
    """table.filter(mask), without the copy when every row stays."""
    return table if pc.all(mask).as_py() in (True, None) else table.filter(mask)


def _with_column(table: pa.Table, name: str, values) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(name), values)


def _merged(table: pa.Table, rows: dict[str, dict], key: str, schema: pa.Schema) -> pa.Table:
    """`table` with `rows` (key -> row) added, a row of `rows` replacing the table's row of its key."""
    if not rows:
        return table
    new = pa.Table.from_pylist([rows[k] for k in sorted(rows)], schema)
    replaced = pc.is_in(table[key], value_set=new[key].combine_chunks())
    if pc.any(replaced).as_py():  # a retried image's row: the table is copied without the old rows
        table = table.filter(pc.invert(replaced))
    return pa.concat_tables([table, new])


def _final(images: pa.Table) -> pa.ChunkedArray:
    """work.is_final over a table's rows: ok, or a final reason."""
    return pc.or_(_equal(images["status"], "ok"),
                  pc.is_in(images["reason"], value_set=pa.array(sorted(FINAL_REASONS), pa.string())))


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


def read_tables(crops_dir: str | Path) -> tuple[pa.Table, pa.Table, list]:
    """The saved state as it stands on disk (a run may be going on), columnar: the images and
    faces tables with their matching deltas applied in order (a delta's row replaces the row of
    its id), and those deltas. DataError when a file is unreadable."""
    crops_dir = Path(crops_dir)
    images_path, faces_path = crops_dir / "state-images.parquet", crops_dir / "state-faces.parquet"
    images, faces = IMAGES_SCHEMA.empty_table(), STATE_FACES_SCHEMA.empty_table()
    if images_path.exists() and faces_path.exists():
        images, faces = _read_images(images_path), _read_faces(faces_path)
    deltas = _delta_files(crops_dir, _base_of(images_path, faces_path)) if crops_dir.is_dir() else []
    if deltas:
        faces = last_per_key(pa.concat_tables([faces] + [_read_faces(f) for _, f, _ in deltas]), "face_id")
        images = last_per_key(pa.concat_tables([images] + [_read_images(i) for _, _, i in deltas]), "image_id")
    return images, faces, deltas


def read_saved(crops_dir: str | Path) -> tuple[dict[str, dict], dict[str, dict], list]:
    """read_tables as rows: image_id -> row and face_id -> row (every row a dict: for tests and
    tools over small states; the stage itself keeps the tables)."""
    images, faces, deltas = read_tables(crops_dir)
    return ({r["image_id"]: r for r in images.to_pylist()}, {r["face_id"]: r for r in faces.to_pylist()}, deltas)


class State:
    """The state of one run: the saved rows as Arrow tables, the rows added or changed since
    the last save (and the open shard's, which change again when it is written) as dicts."""

    def __init__(self, crops_dir: str | Path, key: str, image_ids: pa.Array | pa.ChunkedArray | Iterable[str],
                 shard_rows: int):
        self.dir = Path(crops_dir)
        self.key = key
        self.shard_rows = shard_rows
        self.images_path = self.dir / "state-images.parquet"
        self.faces_path = self.dir / "state-faces.parquet"
        self._images = IMAGES_SCHEMA.empty_table()  # saved rows no dict below holds
        self._faces = STATE_FACES_SCHEMA.empty_table()
        self._new_images: dict[str, dict] = {}  # image_id -> row, added since the last save (the next delta)
        self._new_faces: dict[str, dict] = {}  # face_id -> row, changed since the last save or in the open shard
        self._dirty_faces: set[str] = set()  # of those, the ones changed since the last save
        self._open: dict[str, bytes] = {}  # the open shard: face_id -> PNG
        self._deltas: list[Path] = []  # on disk, for the current base
        self._base = _base_of(self.images_path, self.faces_path)
        self._last_save = time.monotonic()
        if self._load(_ids(image_ids)):
            self.compact()  # superseded rows gone from disk before their shards are (and the old crops with them)
        else:
            self._drop_deltas()  # none applies (stale, or without its images file)
            self.remove_orphans()
        pa.default_memory_pool().release_unused()  # the pages of the tables read and filtered

    def _load(self, image_ids: pa.Array) -> bool:
        """The live state: rows of the current params_key for images still in the manifest whose
        shards exist. Returns whether anything on disk was left out (or came from deltas)."""
        try:
            images, faces, deltas = read_tables(self.dir)
        except DataError as e:
            log.warning("ignoring unreadable detect state (%s): every image is redone", e)
            return True
        if not images.num_rows and not faces.num_rows and not deltas:
            return False
        live = _keep(images, pc.and_(_equal(images["params_key"], self.key),
                                     pc.is_in(images["image_id"], value_set=image_ids)))
        missing = [s for s in pc.unique(faces["shard"]).to_pylist() if s and not (self.dir / s).is_file()]
        if missing:
            in_missing = faces["image_id"].filter(pc.is_in(faces["shard"], value_set=pa.array(missing, pa.string())))
            lost = pc.unique(in_missing.filter(pc.is_in(in_missing, value_set=live["image_id"].combine_chunks())))
            if len(lost):
                log.warning("detect: %d images have crops in shards missing from %s: they are redone", len(lost),
                            self.dir)
                live = live.filter(pc.invert(pc.is_in(live["image_id"], value_set=lost)))
        keep = pc.and_(pc.is_in(faces["image_id"], value_set=live["image_id"].combine_chunks()),
                       _equal(faces["params_key"], self.key))
        self._images, self._faces = live, _keep(faces, keep)
        self._purge({s for s in pc.unique(faces["shard"].filter(pc.invert(keep))).to_pylist() if s})
        return bool(deltas) or self._images.num_rows != images.num_rows or self._faces.num_rows != faces.num_rows

    def _purge(self, shards: set[str]) -> None:
        """Rewrite the shards that also hold crops of faces no longer live (an image left the manifest,
        say an opt-out took it out): the live crops move to a new content-named shard, and the old one,
        no longer named by any row, is deleted with the next save. A crop never outlives its image.
        (Called by _load only, which then compacts: the renamed rows are saved with the tables.)"""
        live = {s for s in pc.unique(self._faces["shard"]).to_pylist() if s}
        mixed = sorted(shards & live)
        for name in mixed:
            crops = read_shard(self.dir / name)
            here = _equal(self._faces["shard"], name)
            keep = {fid: crops[fid] for fid in self._faces.filter(here)["face_id"].to_pylist() if fid in crops}
            new = write_shard(self.dir, keep)
            moved = pc.and_(here, pc.is_in(self._faces["face_id"], value_set=pa.array(list(keep), pa.string())))
            self._faces = _with_column(self._faces, "shard",
                                       pc.if_else(moved, pa.scalar(new, pa.string()), self._faces["shard"]))
        if mixed:
            log.info("detect: rewrote %d crop shards without the crops of faces no longer in the data", len(mixed))

    def image_ids(self, final: bool) -> pa.Array:
        """The image_ids in the state whose outcome stands (`final`) or is transient (redone)."""
        images = self.images_table()
        mask = _final(images)
        return images["image_id"].filter(mask if final else pc.invert(mask)).combine_chunks()

    def _hold(self, mask) -> None:
        """Move the saved face rows selected by `mask` out of the table into the dicts (they are about to change)."""
        for row in self._faces.filter(mask).to_pylist():
            self._new_faces[row["face_id"]] = row
        self._faces = self._faces.filter(pc.invert(mask))

    def reopen(self) -> int:
        """Take under-full shards back into the open shard (smallest first, while it stays under
        `shard_rows`), to be rewritten when full. Returns the number of crops reopened."""
        counts = pc.value_counts(_merged(self._faces, self._new_faces, "face_id", STATE_FACES_SCHEMA)["shard"])
        sizes = {s: n for s, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()) if s}
        chosen, n_open = [], len(self._open)
        for name, n in sorted(sizes.items(), key=lambda kv: (kv[1], kv[0])):
            if n >= self.shard_rows or n_open + n >= self.shard_rows:
                continue
            chosen.append(name)
            n_open += n
        if not chosen:
            return len(self._open)
        self._hold(pc.is_in(self._faces["shard"], value_set=pa.array(chosen, pa.string())))
        for name in chosen:
            crops = read_shard(self.dir / name)
            for fid, row in self._new_faces.items():
                if row["shard"] == name:
                    self._open[fid] = crops[fid]
        return len(self._open)

    def add(self, res: ImageResult, detector: str, size: int) -> None:
        """Record one image (replacing an earlier transient row); its crops join the open shard."""
        self._new_images[res.image_id] = _image_row(res, self.key)
        for f in res.faces:
            self._new_faces[f.face_id] = _face_row(res, f, detector, size, self.key)
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
        saved = [fid for fid in self._open if fid not in self._new_faces]  # only after a compaction mid-run
        if saved:
            self._hold(pc.is_in(self._faces["face_id"], value_set=pa.array(saved, pa.string())))
        for fid in self._open:
            self._new_faces[fid]["shard"] = name
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
        delta without its images file is ignored when loading). Then the saved rows join the
        tables, but for the open shard's, which change again when it is written."""
        n = len(self._deltas)
        stem = self.dir / f"{DELTA_PREFIX}{self._base}-{n:06d}"
        write_parquet(f"{stem}-faces.parquet", pa.Table.from_pylist(
            [self._new_faces[f] for f in sorted(self._dirty_faces)], STATE_FACES_SCHEMA), STATE_FACES_SCHEMA)
        write_parquet(f"{stem}-images.parquet", pa.Table.from_pylist(
            [self._new_images[i] for i in sorted(self._new_images)], IMAGES_SCHEMA), IMAGES_SCHEMA)
        self._deltas.append(Path(stem))
        self._dirty_faces.clear()
        self._into_tables(keep=self._open)
        self._last_save = time.monotonic()
        self.remove_orphans()
        pa.default_memory_pool().release_unused()

    def _into_tables(self, keep: Iterable[str] = ()) -> None:
        """Move the rows of the dicts into the tables, but for the face rows of `keep`."""
        keep = set(keep)
        self._images = _merged(self._images, self._new_images, "image_id", IMAGES_SCHEMA)
        self._new_images = {}
        self._faces = _merged(self._faces, {f: r for f, r in self._new_faces.items() if f not in keep},
                              "face_id", STATE_FACES_SCHEMA)
        self._new_faces = {f: r for f, r in self._new_faces.items() if f in keep}

    def compact(self) -> None:
        """Write both tables whole, then delete every delta (they no longer match the new base).
        Faces first: a kill between the two leaves new faces beside old images, and a face whose
        image has no row is not live (the image is redone)."""
        self._into_tables()
        self._faces, self._images = sorted_by(self._faces, "face_id"), sorted_by(self._images, "image_id")
        write_parquet(self.faces_path, self._faces, STATE_FACES_SCHEMA)
        write_parquet(self.images_path, self._images, IMAGES_SCHEMA)
        self._base = _base_of(self.images_path, self.faces_path)
        self._drop_deltas()
        self._dirty_faces.clear()
        self._last_save = time.monotonic()
        self.remove_orphans()
        pa.default_memory_pool().release_unused()

    def _drop_deltas(self) -> None:
        if self.dir.exists():
            for p in self.dir.glob(f"{DELTA_PREFIX}*.parquet"):
                p.unlink()
        self._deltas = []

    def images_table(self) -> pa.Table:
        """Every image row, sorted by image_id (after a compaction: the table itself, no copy)."""
        return sorted_by(_merged(self._images, self._new_images, "image_id", IMAGES_SCHEMA), "image_id")

    def faces_table(self) -> pa.Table:
        """Every face row, sorted by face_id (after a compaction: the table itself, no copy)."""
        return sorted_by(_merged(self._faces, self._new_faces, "face_id", STATE_FACES_SCHEMA), "face_id")

    def remove_orphans(self) -> int:
        """Delete shards no saved face refers to (killed runs, superseded params) and temp files."""
        if not self.dir.exists():
            return 0
        used = set(pc.unique(self._faces["shard"]).to_pylist()) | {r["shard"] for r in self._new_faces.values()}
        removed = 0
        for p in self.dir.iterdir():
            orphan = p.name.startswith(SHARD_PREFIX) and p.suffix == ".parquet" and p.name not in used
            if orphan or (p.name.startswith(".") and p.name.endswith(".tmp")):
                p.unlink()
                removed += 1
        if removed:
            log.info("detect: removed %d crop shards and temp files no current face uses", removed)
        return removed
