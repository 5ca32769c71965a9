"""Atomic file writes, content hashing and Parquet with explicit schemas.

The atomic writes and hashes are models.fileio's (the one implementation, stdlib only, which
models/ uses too); they are re-exported here so that tasks/ code imports all its file I/O from
one place."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from models.fileio import (atomic_copy, atomic_open, atomic_path, atomic_write_bytes,  # noqa: F401 - re-exported
                           atomic_write_json, atomic_write_text, create_temp, create_temp_dir, file_hexdigest,
                           sha256_bytes, sha256_file)
from tasks.errors import DataError

SCHEMA_VERSION_KEY = b"moeflow.schema_version"
TABLE_KEY = b"moeflow.table"


def with_version(schema: pa.Schema, table_name: str, version: int, extra: dict[str, str] | None = None) -> pa.Schema:
    """Attach the table name and schema version (and any extra metadata) to a schema."""
    meta = dict(schema.metadata or {})
    meta[TABLE_KEY] = table_name.encode()
    meta[SCHEMA_VERSION_KEY] = str(version).encode()
    for k, v in (extra or {}).items():
        meta[k.encode()] = v.encode()
    return schema.with_metadata(meta)


def write_parquet(path: str | os.PathLike, rows: list[dict] | pa.Table, schema: pa.Schema) -> pa.Table:
    """Write rows (or a table) with an explicit schema, atomically."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    if not table.schema.equals(schema, check_metadata=False):
        table = table.cast(schema)
    table = table.replace_schema_metadata(schema.metadata)
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f, compression="zstd")
    return table


def read_parquet(path: str | os.PathLike, table_name: str, max_version: int) -> pa.Table:
    """Read a moeflow Parquet file, checking its table name and schema version."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist (run the stage that writes it first)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path} is not a readable Parquet file: {e}") from None
    meta = table.schema.metadata or {}
    name = meta.get(TABLE_KEY, b"").decode()
    if name != table_name:
        raise DataError(f"{path} holds table {name or '(unknown)'!r}, expected {table_name!r}")
    version = int(meta.get(SCHEMA_VERSION_KEY, b"0"))
    if version < 1 or version > max_version:
        raise DataError(f"{path} has schema version {version}; this moeflow reads up to {max_version}")
    return table
