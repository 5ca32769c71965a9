"""Files: atomic writes, content hashes and Parquet with explicit schemas: the one implementation,
for the stages, the shared layers and models/ (the training loop's checkpoints).

Every write goes to a temp file beside the target, is fsynced and then os.replace'd onto it in
one step; on any exception the temp file is removed and the target left untouched. The result
has the mode a plain write would leave: an existing file keeps its own, a new one gets 0666
less the umask (tempfile.mkstemp would make it 0600, readable by the owner only).

A moeflow Parquet file names its table and schema version in its metadata (`with_version`);
`read_parquet` checks both."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import IO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.errors import DataError


def file_hexdigest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """The hex digest of a file's bytes, read in chunks (md5: what DVC records of a file)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    return file_hexdigest(path, "sha256", chunk)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fresh(directory: str | os.PathLike, prefix: str, suffix: str, make):
    """make(path) on a new random name in `directory` (until one is free)."""
    for _ in range(100):
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return make(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


def create_temp(directory: str | os.PathLike, prefix: str = "", suffix: str = ".tmp") -> tuple[int, str]:
    """A new, uniquely named file in `directory`, opened for writing: (fd, path).

    Unlike tempfile.mkstemp (always 0600) it gets the mode a plain open() would give a new
    file: 0666 less the umask, so artifacts stay readable by whoever could read a normal write."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    return _fresh(directory, prefix, suffix, lambda path: (os.open(path, flags, 0o666), path))


def create_temp_dir(directory: str | os.PathLike, prefix: str = "", suffix: str = ".tmp") -> str:
    """A new, uniquely named directory in `directory`, with the mode mkdir gives (0777 less the
    umask; tempfile.mkdtemp's is 0700), to fill and then rename into place."""
    return _fresh(directory, prefix, suffix, lambda path: (os.mkdir(path, 0o777), path)[1])


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temp file's path beside `path`; it replaces `path` in one step when the block ends
    without an error (and is removed when it does not). For writers that want a file name
    (safetensors' save_file, shutil.copyfile): one that recreates the file (save_file makes it
    0600) gets the mode set again after."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path.parent, prefix=f".{path.name}.")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))  # an overwrite keeps its mode
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
        yield tmp
        os.chmod(tmp, mode)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """open(path, mode) that replaces `path` in one step when the block ends without an error."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Indented, sorted JSON with a final newline (deterministic bytes for the same object)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy src's bytes to dest atomically (a real file: an old symlink at dest is replaced)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)

def safetensors_bytes(tensors: dict, meta: dict[str, str]) -> bytes:
    """safetensors with a canonical header: the library keeps the metadata in a hash map, so its
    key order (and the file's bytes) would change from one process to the next. The header is
    rewritten as sorted, compact JSON, padded with spaces to 8 bytes as the format allows."""
    from safetensors.torch import save as safetensors_save

    raw = safetensors_save(tensors, metadata=meta)
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + raw[8 + n:]


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's header, read without torch ({} when unreadable)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000:
                return {}
            return dict(json.loads(f.read(n)).get("__metadata__") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def read_spec(path: str | os.PathLike, kind: str, stage: str, fmt: int) -> dict:
    """A small JSON spec a stage writes for later stages (`{"format": fmt, ...}`); a DataError naming
    the stage to run when it is missing, unreadable or of another format."""
    p = Path(path)
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p} does not exist (run the {stage} stage first: dvc repro {stage})") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{p} is not a readable {kind}: {e}") from None
    if not isinstance(spec, dict) or spec.get("format") != fmt:
        raise DataError(f"{p}: not a {kind} of format {fmt} (rerun the {stage} stage)")
    return spec


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


READ_BATCH_ROWS = 8192  # rows decoded at a time when reading some columns of a Parquet file


def read_parquet(path: str | os.PathLike, table_name: str, max_version: int,
                 columns: list[str] | None = None) -> pa.Table:
    """Read a moeflow Parquet file, checking its table name and schema version. With `columns`,
    only those are read, a batch of rows at a time (a whole-file read holds every column chunk's
    decoded pages at once); the table keeps the file's schema metadata."""
    if columns is None:
        path = _existing(path)
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as e:
            raise DataError(f"{path} is not a readable Parquet file: {e}") from None
        _check_table(path, table.schema, table_name, max_version)
        return table
    pf = parquet_file(path, table_name, max_version)
    try:
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"{path} has no column {', '.join(missing)}: not a {table_name} table of this moeflow")
        schema = pa.schema([pf.schema_arrow.field(c) for c in columns], metadata=pf.schema_arrow.metadata)
        return pa.Table.from_batches(list(pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns)), schema=schema)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path} is not a readable Parquet file: {e}") from None
    finally:
        pf.close()


def parquet_file(path: str | os.PathLike, table_name: str, max_version: int) -> pq.ParquetFile:
    """Open a moeflow Parquet file for reading parts of it (its row groups), checking its table name
    and schema version from the footer; the caller closes it."""
    path = _existing(path)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path} is not a readable Parquet file: {e}") from None
    try:
        _check_table(path, pf.schema_arrow, table_name, max_version)
    except DataError:
        pf.close()
        raise
    return pf


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist (run the stage that writes it first)")
    return path


def _check_table(path: Path, schema: pa.Schema, table_name: str, max_version: int) -> None:
    meta = schema.metadata or {}
    name = meta.get(TABLE_KEY, b"").decode()
    if name != table_name:
        raise DataError(f"{path} holds table {name or '(unknown)'!r}, expected {table_name!r}")
    version = int(meta.get(SCHEMA_VERSION_KEY, b"0"))
    if version < 1 or version > max_version:
        raise DataError(f"{path} has schema version {version}; this moeflow reads up to {max_version}")
