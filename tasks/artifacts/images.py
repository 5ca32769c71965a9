"""The scrape stage's tables: the manifest of kept images and the table of posts not kept.

- `manifest.parquet` (table "raw_manifest"): one row per kept image, by image_id (the sha256 of its
  bytes), with where its bytes are in the image store (`pack`, `offset`, `length`: a byte range of a
  file under the store, read with `read_image`), where it came from and its size.
- `rejected.parquet` (table "raw_rejected"): every post not kept, by its last verdict: skipped by a
  filter (or an opt-out: reason `optout`), rejected, or failed (transient, retried next run)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from datetime import datetime

import pyarrow as pa

from tasks.errors import DataError
from tasks.fileio import SCHEMA_VERSION_KEY, read_parquet, with_version, write_parquet

MANIFEST_TABLE, REJECTED_TABLE = "raw_manifest", "raw_rejected"
OPTOUT = "optout"  # the skip reason of whatever optout.csv names
EXT_FOR_FORMAT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}
FORMAT_FOR_EXT = {"jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}

# 2: fetched_at is null for local files (no clock in a rebuild of the same files); 3: `pack`, `offset`,
# `length` (the store keeps images in tar packs) instead of `path`
MANIFEST_VERSION = 3
MANIFEST_SCHEMA = with_version(pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    # the file holding the image's bytes, relative to the images directory: a pack (packs/NNNNNN.tar)
    # as the scrape stage writes it; any file does (a file of its own: offset 0, length its size), the
    # user's own file too (scrape.folder_import: reference; `is_reference`)
    pa.field("pack", pa.string(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),  # of the image's first byte in that file
    pa.field("length", pa.int64(), nullable=False),  # of the image's bytes there
    pa.field("source", pa.string(), nullable=False),
    pa.field("post_id", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("page_url", pa.string()),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("format", pa.string(), nullable=False),
    pa.field("bytes", pa.int64(), nullable=False),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("rating", pa.string()),
    pa.field("artist", pa.string()),
    pa.field("title", pa.string()),
    pa.field("character", pa.string()),
    pa.field("fetched_at", pa.timestamp("us", tz="UTC")),  # when it was downloaded; null for the folder source
]), MANIFEST_TABLE, MANIFEST_VERSION)

REJECTED_VERSION = 3  # 2: `kind`, and the posts skipped by the filters; 3: `at` null for the folder source
REJECTED_SCHEMA = with_version(pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("post_id", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("kind", pa.string(), nullable=False),  # skipped (by the listing) | rejected (judged) | failed (transient)
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("final", pa.bool_(), nullable=False),  # false: transient, retried on the next run
    pa.field("at", pa.timestamp("us", tz="UTC")),  # when; null for the folder source
]), REJECTED_TABLE, REJECTED_VERSION)


def _table(records: list[Mapping], schema: pa.Schema) -> pa.Table:
    """The records (journal records) as a table of `schema`, in their order, a column at a time
    (ISO timestamps parsed): the table Table.from_pylist gives of their rows, without a Python dict
    per row."""
    columns = []
    for f in schema:
        values = [rec.get(f.name) for rec in records]
        if pa.types.is_timestamp(f.type):
            values = [datetime.fromisoformat(v) if isinstance(v, str) else v for v in values]
        columns.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def write_manifest(path: str | os.PathLike, records: Iterable[Mapping]) -> int:
    """The kept images' records (the store's journal lines), in image_id order."""
    rows = sorted(records, key=lambda r: r["image_id"])
    write_parquet(path, _table(rows, MANIFEST_SCHEMA), MANIFEST_SCHEMA)
    return len(rows)


def write_rejected(path: str | os.PathLike, records: Iterable[Mapping]) -> int:
    """The posts not kept (their last verdict each), in (source, post_id) order."""
    rows = sorted(records, key=lambda r: (r["source"], r["post_id"]))
    write_parquet(path, _table(rows, REJECTED_SCHEMA), REJECTED_SCHEMA)
    return len(rows)


def read_manifest(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """The manifest (or the named columns of it)."""
    table = read_parquet(path, MANIFEST_TABLE, MANIFEST_VERSION, columns)  # only those columns are read
    version = int(table.schema.metadata[SCHEMA_VERSION_KEY])
    if version < MANIFEST_VERSION:
        raise DataError(f"{path} has schema version {version}, from before the image store's packs: "
                        f"run the scrape stage again (dvc repro scrape)")
    return table.select(columns) if columns else table


def is_reference(pack: str) -> bool:
    """Whether a row's `pack` names a file outside the image store: a file of the user's folder that
    the folder import left in place (scrape.folder_import: reference), by its path relative to the
    images directory (`../`) or an absolute one. Not the store's bytes, so not trusted: every read
    checks them against the image_id, their sha256 (read_span's `sha256`)."""
    return pack.startswith("../") or os.path.isabs(pack)


def read_image(images_dir: str | os.PathLike, row: Mapping) -> bytes:
    """The bytes of one stored image: `length` bytes at `offset` of `pack` under `images_dir` (a
    manifest row, or a store record). The one way every stage and tool reads a stored image."""
    return read_span(os.path.join(images_dir, row["pack"]), int(row["offset"]), int(row["length"]),
                     row["image_id"] if is_reference(row["pack"]) else None)


class Changed(OSError):
    """A referenced file that no longer holds the bytes imported from it (or is gone)."""


def read_span(path: str | os.PathLike, offset: int, length: int, sha256: str | None = None) -> bytes:
    """`length` bytes at `offset` of the file at `path` (read_image's core, for a worker handed a
    resolved pack path); OSError when the file ends first. With `sha256` (a referenced file), the
    bytes must hash to it: else `Changed`, as for a file that is gone."""
    if sha256 is not None:
        try:
            data = read_span(path, offset, length)
        except OSError as e:
            raise Changed(f"{path}: gone since the image store referenced it ({e.strerror or e})") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise Changed(f"{path}: changed since the image store referenced it (its bytes are no longer "
                          f"image {sha256[:12]}); run the scrape stage again (dvc repro scrape)")
        return data
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        parts, got = [], 0
        while got < length:
            part = os.pread(fd, length - got, offset + got)
            if not part:
                break
            parts.append(part)
            got += len(part)
    finally:
        os.close(fd)
    if got != length:
        raise OSError(f"{path}: {length} bytes expected at offset {offset}, the file ends after {got}")
    return b"".join(parts)


def read_rejected(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    table = read_parquet(path, REJECTED_TABLE, REJECTED_VERSION)
    return table.select(columns) if columns else table
