"""Atomic file writes and content hashes: the one implementation, for models/ and tasks/.

It lives here, stdlib only and importing nothing of the project, because models/ must not
import tasks/ (models/ stays usable without Prefect and without the pipeline); tasks.fileio
re-exports it next to its Parquet helpers, so tasks/ code has one import path too.

Every write goes to a temp file beside the target, is fsynced and then os.replace'd onto it in
one step; on any exception the temp file is removed and the target left untouched. The result
has the mode a plain write would leave: an existing file keeps its own, a new one gets 0666
less the umask (tempfile.mkstemp would make it 0600, readable by the owner only)."""

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
