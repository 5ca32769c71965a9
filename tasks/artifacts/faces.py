"""The faces dataset: the contract between detect and every later stage.

- `faces.parquet` (table "faces"): one row per detected face, kept or dropped.
- `images.parquet` (table "detect_images"): one row per input image: ok, or why it was unusable.
- crops: Parquet shards under the crops directory, each row a face_id and its encoded PNG
  (rows sorted by face_id), so DVC tracks a few files rather than one per face. detect names
  a shard by its content (`shard-<sha256 of its face_ids and PNGs>.parquet`, `write_shard`):
  the same crops give the same file, on any machine, in any run.

A face is *kept* when `drop_reason` is null (near-duplicates get drop_reason "duplicate"
and `duplicate_of`; monochrome crops are flagged, and dropped only if detect says so)."""

from __future__ import annotations

import bisect
import collections
import hashlib
import io
import math
import os
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.errors import DataError
from tasks.fileio import atomic_open, parquet_file, read_parquet, with_version, write_parquet

BOX = ("box_x", "box_y", "box_w", "box_h")  # the detected box, image pixels
CROP = ("crop_x0", "crop_y0", "crop_x1", "crop_y1")  # the square crop box (may reach past the image)

# The largest detect.box_scale: a crop box's side is at most this times its image's longer side. A
# recorded box beyond it (a release row) is refused before a pixel is allocated (crop_box_problem).
MAX_BOX_SCALE = 4.0

FACES_TABLE = "faces"
FACES_VERSION = 1
RGB = pa.list_(pa.uint8(), 3)
FACES_SCHEMA = with_version(pa.schema([
    pa.field("face_id", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("detector", pa.string(), nullable=False),
    pa.field("score", pa.float32()),  # detector confidence (cascade level weight, animeface likelihood)
    pa.field("box_x", pa.int32(), nullable=False),  # the detected box, image pixels
    pa.field("box_y", pa.int32(), nullable=False),
    pa.field("box_w", pa.int32(), nullable=False),
    pa.field("box_h", pa.int32(), nullable=False),
    pa.field("crop_x0", pa.int32(), nullable=False),  # the enlarged crop box, may extend past the image when padded
    pa.field("crop_y0", pa.int32(), nullable=False),
    pa.field("crop_x1", pa.int32(), nullable=False),
    pa.field("crop_y1", pa.int32(), nullable=False),
    pa.field("size", pa.int32(), nullable=False),  # side of the stored square crop
    pa.field("monochrome", pa.bool_(), nullable=False),
    pa.field("duplicate_of", pa.string()),
    pa.field("drop_reason", pa.string()),  # null = kept
    pa.field("hair_rgb", RGB),  # animeface only
    pa.field("eye_rgb", RGB),
    pa.field("skin_rgb", RGB),
    pa.field("shard", pa.string()),  # crops shard file (relative to the crops dir); null when no crop was stored
    pa.field("params_key", pa.string(), nullable=False),  # hash of the detector params that produced the row
]), FACES_TABLE, FACES_VERSION)

# images.parquet (detect.out.images): one row per input image, ok or why it was unusable
IMAGES_TABLE = "detect_images"
IMAGES_VERSION = 2  # v2: no `seconds` column (timings belong in the log, not in an artifact)
IMAGES_SCHEMA = with_version(pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("params_key", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # ok | bad
    pa.field("reason", pa.string()),  # bad: FINAL_REASONS (not retried) or TRANSIENT_REASONS (retried)
    pa.field("detail", pa.string()),
    pa.field("width", pa.int32()),  # after EXIF orientation
    pa.field("height", pa.int32()),
    pa.field("faces", pa.int32(), nullable=False),  # detected, kept or not
]), IMAGES_TABLE, IMAGES_VERSION)

CROPS_TABLE = "face_crops"
CROPS_VERSION = 1
CROPS_SCHEMA = with_version(pa.schema([
    pa.field("face_id", pa.string(), nullable=False),
    pa.field("png", pa.binary(), nullable=False),
]), CROPS_TABLE, CROPS_VERSION)


def crop_box_problem(box: tuple[int, int, int, int], width: int, height: int, *, turned: bool = False) -> str | None:
    """Why `box` (x0, y0, x1, y1) cannot be a crop box of a `width` x `height` image, or None: empty,
    wider or taller than MAX_BOX_SCALE x the image's longer side (detect never makes one; cutting it
    would allocate side² pixels), or wholly outside the image. `turned`: the image may be turned a
    quarter (a release row's size is the file's, before EXIF orientation), so either side may be
    either axis."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return f"crop box {tuple(box)} is empty"
    longest = max(width, height)
    limit = math.floor(MAX_BOX_SCALE * longest + 0.5)
    if x1 - x0 > limit or y1 - y0 > limit:
        return (f"crop box {tuple(box)} is {x1 - x0}x{y1 - y0} px, more than {MAX_BOX_SCALE:g} x the longer side "
                f"of its {width}x{height} image")
    w, h = (longest, longest) if turned else (width, height)
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        return f"crop box {tuple(box)} lies outside its {width}x{height} image"
    return None


def face_id(image_id: str, detector: str, crop_box: tuple[int, int, int, int]) -> str:
    """Stable id from (image_id, detector, crop box): same input, same id, every rerun."""
    key = f"{image_id}|{detector}|{','.join(str(int(v)) for v in crop_box)}"
    return hashlib.sha256(key.encode()).hexdigest()


def read_faces(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """faces.parquet (or only the named columns: the others are not read)."""
    return read_parquet(path, FACES_TABLE, FACES_VERSION, columns)


def write_faces(path: str | os.PathLike, rows: Iterable[dict] | pa.Table) -> pa.Table:
    return write_parquet(path, rows if isinstance(rows, pa.Table) else list(rows), FACES_SCHEMA)


def write_images(path: str | os.PathLike, table: pa.Table) -> pa.Table:
    """images.parquet: one row per input image, in image_id order."""
    return write_parquet(path, table.sort_by("image_id"), IMAGES_SCHEMA)


def read_images(path: str | os.PathLike) -> pa.Table:
    return read_parquet(path, IMAGES_TABLE, IMAGES_VERSION)


SHARD_PREFIX = "shard-"


def shard_name(crops: dict[str, bytes]) -> str:
    """The content name of a shard holding `crops` (face_id -> PNG)."""
    h = hashlib.sha256()
    for fid in sorted(crops):
        png = crops[fid]
        h.update(fid.encode())
        h.update(len(png).to_bytes(8, "little"))
        h.update(png)
    return f"{SHARD_PREFIX}{h.hexdigest()[:24]}.parquet"


SHARD_GROUP_ROWS = 128  # crops per row group of a shard: a reader of some crops reads their groups only


def write_shard(crops_dir: str | os.PathLike, crops: dict[str, bytes], name: str | None = None) -> str:
    """Write `crops` (face_id -> PNG) as one shard, rows sorted by face_id in row groups of
    SHARD_GROUP_ROWS, atomically (a group at a time: no second copy of the crops in memory); returns
    its file name: `name`, or by default the content name (an existing file of that name already
    holds these very crops and is left as it is)."""
    directory = Path(crops_dir)
    name = name or shard_name(crops)
    path = directory / name
    if path.name != name or not name.startswith(SHARD_PREFIX) or not name.endswith(".parquet"):
        raise ValueError(f"not a shard file name: {name!r}")
    if path.exists() and name == shard_name(crops):
        return name
    ids = sorted(crops)
    with atomic_open(path, "wb") as f, pq.ParquetWriter(f, CROPS_SCHEMA, compression="none") as writer:
        for at in range(0, len(ids), SHARD_GROUP_ROWS):  # PNG bytes do not compress further
            part = ids[at:at + SHARD_GROUP_ROWS]
            writer.write_table(pa.table({"face_id": part, "png": [crops[f] for f in part]}, schema=CROPS_SCHEMA))
    _release()
    return name


def shard_groups(path: str | os.PathLike) -> list[tuple[str, str]] | None:
    """(first, last) face_id of each row group of a shard, from its footer (no crop is read); None
    when a group has no statistics (then only a whole read tells what it holds)."""
    pf = parquet_file(path, CROPS_TABLE, CROPS_VERSION)
    try:
        return _groups(pf)
    finally:
        pf.close()


def _groups(pf: pq.ParquetFile) -> list[tuple[str, str]] | None:
    col = pf.schema_arrow.get_field_index("face_id")
    out = []
    for g in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(g).column(col).statistics
        if st is None or not st.has_min_max:
            return None
        out.append((st.min, st.max))
    return out


def read_shard(path: str | os.PathLike, only: Iterable[str] | None = None) -> dict[str, bytes]:
    """face_id -> PNG bytes of the crops of one shard, a row group at a time (Arrow holds one group,
    never the whole shard, beside the result); with `only`, of just those faces, reading only the
    groups that can hold them (the shard's other crops are never read: a few crops out of many
    shards cost their groups)."""
    wanted = None if only is None else sorted(set(only))
    pf = parquet_file(path, CROPS_TABLE, CROPS_VERSION)  # the footer is read once
    out: dict[str, bytes] = {}
    try:
        groups = None if wanted is None else _groups(pf)
        for g in range(pf.metadata.num_row_groups):
            if groups is not None:
                lo, hi = groups[g]
                i = bisect.bisect_left(wanted, lo)
                if i == len(wanted) or wanted[i] > hi:
                    continue
            t = pf.read_row_group(g)
            if wanted is not None:
                t = t.filter(pc.is_in(t.column("face_id"), value_set=pa.array(wanted, pa.string())))
            out.update(zip(t.column("face_id").to_pylist(), t.column("png").to_pylist()))
            del t
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path} is not a readable crops shard: {e}") from None
    finally:
        pf.close()
    _release()
    return out


def _release() -> None:
    """Hand a shard's freed Arrow memory back to the system. Arrow's allocator (mimalloc) keeps the
    pages of what was freed: shard after shard, a process would hold several shards' worth it no
    longer uses (~370 MB after four 56 MB shards; the same ~150 MB as after one with this)."""
    pa.default_memory_pool().release_unused()


class ShardWriter:
    """Append crops to shards of at most `rows_per_shard` rows named `shard-<prefix>-<n>.parquet`,
    for building a faces dataset outside detect (fixtures, tools); detect itself writes
    content-named shards (`write_shard`)."""

    def __init__(self, crops_dir: str | os.PathLike, prefix: str, rows_per_shard: int = 2048):
        self.dir = Path(crops_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.rows_per_shard = rows_per_shard
        self._ids: list[str] = []
        self._pngs: list[bytes] = []
        self._n = 0

    def _name(self) -> str:
        return f"shard-{self.prefix}-{self._n:05d}.parquet"

    def add(self, fid: str, png: bytes) -> str:
        """Queue one crop; returns the shard name it will live in."""
        name = self._name()
        self._ids.append(fid)
        self._pngs.append(png)
        if len(self._ids) >= self.rows_per_shard:
            self.flush()
        return name

    def flush(self) -> None:
        if not self._ids:
            return
        write_shard(self.dir, dict(zip(self._ids, self._pngs)), self._name())
        self._ids, self._pngs = [], []
        self._n += 1


class CropReader:
    """Read crops by face_id: the faces of `faces` only. Reads a shard a row group at a time (the
    crops of those faces in it) and keeps the last `cache_groups` groups in memory, so what it holds
    does not grow with the shards' size. Read in (shard, face_id) order to read each group once."""

    def __init__(self, faces: pa.Table | str | os.PathLike, crops_dir: str | os.PathLike, cache_groups: int = 4):
        table = faces if isinstance(faces, pa.Table) else read_faces(faces)
        self.dir = Path(crops_dir)
        self._shard_of = {f: s for f, s in zip(table.column("face_id").to_pylist(), table.column("shard").to_pylist()) if s}
        self._in_shard: dict[str, list[str]] = {}
        for f, s in sorted(self._shard_of.items()):
            self._in_shard.setdefault(s, []).append(f)  # sorted by face_id
        self._lasts: dict[str, list[str]] = {}  # shard -> the last face_id of each row group
        self._cache: collections.OrderedDict[tuple[str, int], dict[str, bytes]] = collections.OrderedDict()
        self._cache_groups = cache_groups

    def __contains__(self, fid: str) -> bool:
        return fid in self._shard_of

    def _group(self, name: str, fid: str) -> dict[str, bytes]:
        if name not in self._lasts:
            groups = shard_groups(self.dir / name)
            ids = self._in_shard[name]
            self._lasts[name] = [ids[-1]] if groups is None else [hi for _, hi in groups]  # None: one read
        lasts = self._lasts[name]
        g = bisect.bisect_left(lasts, fid)
        if g == len(lasts):
            raise KeyError(fid)  # past the shard's last crop: not in it
        if (name, g) not in self._cache:
            while len(self._cache) >= self._cache_groups:
                self._cache.popitem(last=False)
            ids = self._in_shard[name]
            lo = bisect.bisect_right(ids, lasts[g - 1]) if g else 0
            self._cache[(name, g)] = read_shard(self.dir / name, ids[lo:bisect.bisect_right(ids, lasts[g])])
        return self._cache[(name, g)]

    def read(self, fid: str) -> bytes:
        """The crop's PNG bytes. KeyError if the face has no stored crop."""
        return self._group(self._shard_of[fid], fid)[fid]

    def image(self, fid: str):
        from PIL import Image

        return Image.open(io.BytesIO(self.read(fid))).convert("RGB")


def kept_mask(table: pa.Table) -> list[bool]:
    return [r is None for r in table.column("drop_reason").to_pylist()]


def iter_kept_faces(faces_path: str | os.PathLike, crops_dir: str | os.PathLike) -> Iterator[tuple[dict, bytes]]:
    """(row, png bytes) for every kept face, shard by shard so memory stays bounded."""
    table = read_faces(faces_path)
    kept = table.filter(pa.array(kept_mask(table)))
    reader = CropReader(kept, crops_dir, cache_groups=1)
    rows = sorted(kept.to_pylist(), key=lambda r: (r["shard"] or "", r["face_id"]))
    for row in rows:
        if row["shard"]:
            yield row, reader.read(row["face_id"])
