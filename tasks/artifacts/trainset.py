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

import contextlib
import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.artifacts.tags import MGM_TAGS
from tasks.errors import DataError
from tasks.fileio import TABLE_KEY, atomic_open, read_parquet, with_version

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


def fingerprint_line(face_id: str, image_sha256: str, attributes: Sequence[int], split: str) -> bytes:
    """One row's share of the data fingerprint (sha256 over these lines in row order)."""
    return f"{face_id}|{image_sha256}|{[int(v) for v in attributes]}|{split}\n".encode()


class DatasetWriter:
    """Write the dataset atomically, row by row in the order given (face_id order), holding at most
    one row group (ROWS_PER_GROUP rows) in memory. The fingerprint goes in the schema, so it is
    computed first (`fingerprint_line`, over the same rows). Use as a context manager: the file
    appears when the block ends without an error."""

    def __init__(self, out_path: str | os.PathLike, fingerprint: str, metadata: dict[str, str] | None = None):
        schema = export_schema(fingerprint)
        if metadata:
            schema = schema.with_metadata({**schema.metadata, **{k.encode(): v.encode() for k, v in metadata.items()}})
        self.schema, self.out_path, self.rows = schema, out_path, 0
        self._cols: tuple[list, list, list, list] = ([], [], [], [])
        self._stack = contextlib.ExitStack()
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> "DatasetWriter":
        f = self._stack.enter_context(atomic_open(self.out_path, "wb"))
        self._writer = self._stack.enter_context(pq.ParquetWriter(f, self.schema, compression="none"))
        return self

    def add(self, face_id: str, image: bytes, attributes: Sequence[int], split: str) -> None:
        for col, v in zip(self._cols, (face_id, image, [int(a) for a in attributes], split)):
            col.append(v)
        if len(self._cols[0]) >= ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._cols[0]:
            ids, images, atts, splits = self._cols
            self._writer.write_table(pa.table({"face_id": ids, "png": images, "attributes": atts, "split": splits},
                                              schema=self.schema), row_group_size=ROWS_PER_GROUP)
            self.rows += len(ids)
            self._cols = ([], [], [], [])

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self._flush()
            except BaseException as e:  # the temp file goes too
                self._stack.__exit__(type(e), e, e.__traceback__)
                raise
        return self._stack.__exit__(exc_type, exc, tb)


def write_dataset(out_path: str | os.PathLike, face_ids: Sequence[str], images: Sequence[bytes],
                  attributes: Sequence[Sequence[int]], splits: Sequence[str],
                  metadata: dict[str, str] | None = None) -> str:
    """Write the dataset atomically, rows in the order given (face_id order); returns the data
    fingerprint. `images` are encoded crops Pillow reads (the column is named png; the reader
    decodes any format), read twice (fingerprint, then rows). `metadata`: more schema metadata."""
    digest = hashlib.sha256()
    for fid, img, att, split in zip(face_ids, images, attributes, splits, strict=True):
        digest.update(fingerprint_line(fid, hashlib.sha256(img).hexdigest(), att, split))
    fingerprint = digest.hexdigest()
    with DatasetWriter(out_path, fingerprint, metadata) as w:
        for row in zip(face_ids, images, attributes, splits):
            w.add(*row)
    return fingerprint


class Crops:
    """The encoded crops of a dataset, held as the Arrow column (one buffer per row group, no
    Python object per crop): `crops[i]` is one crop's bytes."""

    def __init__(self, chunks: Sequence[pa.Array], take: np.ndarray | None = None):
        self._chunks = [c for c in chunks if len(c)]
        self._starts = np.cumsum([0] + [len(c) for c in self._chunks])
        self._take = take  # row numbers into the chunks, or all of them

    def __len__(self) -> int:
        return int(self._starts[-1]) if self._take is None else len(self._take)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        row = int(i if self._take is None else self._take[i])
        c = int(np.searchsorted(self._starts, row, side="right")) - 1
        return self._chunks[c][row - int(self._starts[c])].as_py()

    def take(self, rows: np.ndarray) -> "Crops":
        rows = np.asarray(rows, np.int64)
        return Crops(self._chunks, rows if self._take is None else self._take[rows])


@dataclass(frozen=True)
class Export:
    face_ids: list[str]
    pngs: Crops  # the encoded crops, indexable like a list of bytes
    attributes: np.ndarray  # (N, n_tags) int8, -1 = unknown
    split: np.ndarray  # (N,) str: train | holdout
    fingerprint: str  # sha256 over the rows (write_dataset)
    tagger: str = ""  # the tag backend that made the attributes (TAGGER_KEY; "" when not recorded)
    tagger_reason: str = ""  # why that backend ran

    def take(self, which: str) -> "Export":
        keep = np.flatnonzero(self.split == which)
        return Export([self.face_ids[i] for i in keep], self.pngs.take(keep), self.attributes[keep],
                      self.split[keep], self.fingerprint, self.tagger, self.tagger_reason)


def _meta_of(path: str | os.PathLike, meta: dict) -> tuple[str, str, str]:
    version = int(meta.get(b"moeflow.schema_version", b"0"))
    if version != EXPORT_VERSION:
        raise DataError(f"{path}: training dataset schema version {version}, this moeflow reads {EXPORT_VERSION} "
                        "(rerun the train stage's export: dvc repro train)")
    return (meta.get(FINGERPRINT_KEY, b"").decode(), meta.get(TAGGER_KEY, b"").decode(),
            meta.get(TAGGER_REASON_KEY, b"").decode())


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    """A string column as a numpy str array, made from its distinct values (no Python str per row)."""
    coded = column.combine_chunks().dictionary_encode()
    return np.asarray(coded.dictionary.to_pylist())[coded.indices.to_numpy(zero_copy_only=False).astype(np.int64)]


def _attributes(t: pa.Table) -> np.ndarray:
    return np.asarray(t.column("attributes").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                      dtype=np.int8).reshape(t.num_rows, -1)


def read_export(path: str | os.PathLike) -> Export:
    """The whole dataset (DataError when it is missing, unreadable or of another version); the crops
    stay in Arrow buffers (`Crops`). A reader that decodes them all uses `open_export` instead."""
    t = read_parquet(path, EXPORT_TABLE, EXPORT_VERSION)
    fingerprint, tagger, reason = _meta_of(path, t.schema.metadata or {})
    return Export(t.column("face_id").to_pylist(), Crops(t.column("png").chunks), _attributes(t),
                  _strings(t.column("split")), fingerprint, tagger, reason)


class ExportFile:
    """The dataset without its crops in memory: face_ids (an Arrow string column), attributes, split
    and metadata read at once (small; a batch of rows decoded at a time, no Python object per row),
    the crops decoded on demand, one row group at a time (`decode`), or held encoded (`crops`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{path} does not exist (run the stage that writes it first)")
        try:
            self._file = pq.ParquetFile(self.path)
            t = self._columns(["face_id", "attributes", "split"])
        except (OSError, pa.ArrowInvalid) as e:
            raise DataError(f"{path} is not a readable Parquet file: {e}") from None
        meta = self._file.schema_arrow.metadata or {}
        if meta.get(TABLE_KEY, b"").decode() != EXPORT_TABLE:
            raise DataError(f"{path} holds table {meta.get(TABLE_KEY, b'').decode() or '(unknown)'!r}, "
                            f"expected {EXPORT_TABLE!r}")
        self.fingerprint, self.tagger, self.tagger_reason = _meta_of(path, meta)
        self.face_ids = t.column("face_id")
        self.attributes = _attributes(t)
        self.split = _strings(t.column("split"))
        md = self._file.metadata
        self._group_starts = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])

    def _columns(self, columns: list[str]) -> pa.Table:
        """These columns of every row, read a batch at a time (a ParquetFile's whole read keeps its
        decoded pages while the file stays open)."""
        schema = pa.schema([self._file.schema_arrow.field(c) for c in columns])
        return pa.Table.from_batches(list(self._file.iter_batches(batch_size=ROWS_PER_GROUP, columns=columns)),
                                     schema=schema)

    def crops(self) -> Crops:
        """Every encoded crop, held as the Arrow column (`Crops`: no Python object per crop)."""
        return Crops(self._columns(["png"]).column("png").chunks)

    def __len__(self) -> int:
        return len(self.face_ids)

    def decode(self, rows: Sequence[int], size: int, threads: int = 1) -> np.ndarray:
        """The crops of `rows` (row numbers, any order) as uint8 (len(rows), size, size, 3), reading
        only the row groups that hold them, one at a time."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), size, size, 3), np.uint8)
        for at, images in self._by_group(rows, size, threads):
            out[at] = images
        return out

    def iter_decoded(self, rows: Sequence[int], size: int, threads: int = 1) -> Iterator[np.ndarray]:
        """The crops of `rows` (ascending row numbers) decoded as `decode` does, one row group's
        worth at a time: memory for one row group, whatever the dataset's size."""
        rows = np.asarray(rows, np.int64)
        if np.any(np.diff(rows) < 0):
            raise ValueError("iter_decoded wants ascending rows")
        for _, images in self._by_group(rows, size, threads):
            yield images

    def _by_group(self, rows: np.ndarray, size: int, threads: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in `rows`, their decoded crops) per row group, in row-group order."""
        groups = np.searchsorted(self._group_starts, rows, side="right") - 1
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for g in np.unique(groups):
                at = np.flatnonzero(groups == g)
                col = self._file.read_row_group(int(g), columns=["png"]).column("png")
                local = rows[at] - int(self._group_starts[g])
                yield at, np.stack(list(pool.map(lambda r: decode(col[int(r)].as_py(), size), local)))


def decode(png: bytes, size: int) -> np.ndarray:
    """An encoded crop as uint8 (size, size, 3) RGB, resized bicubically when it is another size."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.asarray(im, dtype=np.uint8)
