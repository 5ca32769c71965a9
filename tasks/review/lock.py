"""One writer at a time for the reviewer's files: the decisions CSV and the queue beside it.

`merge` and the `review` stage each hold `<decisions>.lock` (an advisory `flock`, released
by the kernel when the process ends, however it ends) for as long as they read and write.
A second one does not wait: it stops with a ReviewError that names the holder. The lock file
stays (empty when idle); git ignores it (`*.csv.lock`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from tasks.errors import ReviewError


def lock_path(decisions: str | os.PathLike) -> Path:
    return Path(f"{decisions}.lock")


@contextlib.contextmanager
def decisions_lock(decisions: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the lock of the decisions CSV while `what` (e.g. "merge") runs, or raise ReviewError."""
    path = lock_path(decisions)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "another process"
            raise ReviewError(f"{decisions} is in use by {holder}: wait until it finishes, then run this again "
                              f"(lock file {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (pid {os.getpid()})\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # an idle lock file is empty
    finally:
        os.close(fd)  # closing the last descriptor releases the lock
