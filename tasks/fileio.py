"""Atomic file writes, content hashing and Parquet with explicit schemas."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.errors import DataError

SCHEMA_VERSION_KEY = b"moeflow.schema_version"
TABLE_KEY = b"moeflow.table"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create_temp(directory: str | os.PathLike, prefix: str = "", suffix: str = ".tmp") -> tuple[int, str]:
    """A new, uniquely named file in `directory`, opened for writing: (fd, path).

    Unlike tempfile.mkstemp (always 0600) it gets the mode a plain open() would give a new
    file: 0666 less the umask, so artifacts stay readable by whoever could read a normal write."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Write to a temp file beside `path`, then os.replace it in one step.

    The result has the mode a plain write would leave: an existing file keeps its own, a new
    one gets 0666 less the umask. On any exception the temp file is removed and `path` is
    left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(f.fileno(), stat.S_IMODE(os.stat(path).st_mode))  # an overwrite keeps its mode
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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
