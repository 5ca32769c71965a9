"""Reading a file of a local source (`scrape.folder`: the folder source, a release's folder import)
without trusting it: only a regular file is read (a symlink is followed to one), never a device,
a named pipe or a socket, and never more than `max_bytes` of it, counted as the bytes are read
(a file that grows while it is copied, or that says it is smaller than it is, is cut off and
rejected). A name that points nowhere (a dangling symlink, a symlink loop) or at no regular file
is a rejection the stage records; the run goes on. A file it may not read (permissions, an I/O
error) is a transient failure, retried next run.

With scrape.folder_import: reference the file is only hashed where it is (`hash_in_place`): the
store then names it instead of a copy (tasks.scrape.store).

A local post's `stat` (`signature`) is how the store notices a changed file under the same name
without reading it: the file type, size and mtime of what the name points to; when they differ
from the ones recorded, the bytes are hashed and compared with the recorded sha256."""

from __future__ import annotations

import errno
import hashlib
import os
import stat

from tasks.errors import Rejected
from tasks.fileio import create_temp
from tasks.http import Download, FetchFailed

CHUNK = 1 << 20
KINDS = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket"}


def signature(path: str) -> list[int] | None:
    """[file type, size, mtime_ns] of what `path` points to (of the link itself when it points
    nowhere), or None when there is nothing at all."""
    for look in (os.stat, os.lstat):
        try:
            st = look(path)
        except OSError:
            continue
        return [stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns]
    return None


def _refuse(name: str, e: OSError) -> Exception:
    """A verdict for names that cannot point at a file (recorded, final); else a transient failure."""
    if e.errno == errno.ENOENT:
        return Rejected("unreadable", f"{name}: points at nothing (a dangling symlink, or removed)")
    if e.errno == errno.ELOOP:
        return Rejected("unreadable", f"{name}: a symlink loop")
    if e.errno in (errno.ENOTDIR, errno.ENAMETOOLONG):
        return Rejected("unreadable", f"{name}: {e.strerror}")
    return FetchFailed("unreadable", f"{name}: {e.strerror}")


def _check_regular(name: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise Rejected("not_a_file", f"{name}: {KINDS.get(stat.S_IFMT(mode), 'a special file')}, not a regular file")


def open_regular(path: str, name: str) -> int:
    """A descriptor on the regular file `path`, or Rejected / FetchFailed (`name` goes in messages).
    Checked before opening (opening a named pipe would block) and again on the open descriptor
    (the name may have been swapped in between); O_NONBLOCK so that even then no open blocks."""
    try:
        _check_regular(name, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise _refuse(name, e) from None
    try:
        _check_regular(name, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read(fd: int, name: str, max_bytes: int, sink=None) -> tuple[str, int]:
    """sha256 and size of what `fd` holds, at most `max_bytes` of it (else Rejected too_large)."""
    h, size = hashlib.sha256(), 0
    while True:
        try:
            chunk = os.read(fd, CHUNK)
        except OSError as e:
            raise FetchFailed("unreadable", f"{name}: {e.strerror}") from None
        if not chunk:
            return h.hexdigest(), size
        size += len(chunk)
        if size > max_bytes:
            raise Rejected("too_large", f"{name} (> {max_bytes} bytes)")
        h.update(chunk)
        if sink is not None:
            sink.write(chunk)


def copy_local(path: str, name: str, tmp_dir: str, max_bytes: int) -> Download:
    """Copy the local file `path` into tmp_dir (for the store), hashing it on the way."""
    fd = open_regular(path, name)
    try:
        out_fd, tmp = create_temp(tmp_dir, suffix=".part")
        try:
            with os.fdopen(out_fd, "wb") as out:
                sha, size = _read(fd, name, max_bytes, out)
        except BaseException:
            os.unlink(tmp)
            raise
    finally:
        os.close(fd)
    return Download(tmp, sha, size, name, "", framed=True)


def hash_in_place(path: str, name: str, max_bytes: int) -> Download:
    """Read the local file `path` where it is (scrape.folder_import: reference): its sha256 and size,
    and the Download names the file itself, to be judged and referenced, never moved or deleted."""
    fd = open_regular(path, name)
    try:
        sha, size = _read(fd, name, max_bytes)
    finally:
        os.close(fd)
    return Download(path, sha, size, name, "", framed=True)


def hash_local(path: str, max_bytes: int) -> str | None:
    """The sha256 of the local file `path`, or None when it is not a readable regular file of at
    most `max_bytes` (reading it would then be judged anew)."""
    try:
        fd = open_regular(path, path)
    except (Rejected, FetchFailed):
        return None
    try:
        return _read(fd, path, max_bytes)[0]
    except (Rejected, FetchFailed):
        return None
    finally:
        os.close(fd)
