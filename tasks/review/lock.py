"""One writer at a time for the reviewer's files: the decisions CSV and the queue beside it.

`merge` and the `review` stage each hold `<decisions>.lock` (tasks.lock: an advisory `flock`,
released by the kernel when the process ends, however it ends) for as long as they read and write.
A second one does not wait: it stops with a ReviewError that names the holder. The lock file
stays (empty when idle); git ignores it (`*.csv.lock`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tasks.errors import ReviewError
from tasks.lock import exclusive


def lock_path(decisions: str | os.PathLike) -> Path:
    return Path(f"{decisions}.lock")


def decisions_lock(decisions: str | os.PathLike, what: str) -> contextlib.AbstractContextManager[None]:
    """Hold the lock of the decisions CSV while `what` (e.g. "merge") runs, or raise ReviewError."""
    path = lock_path(decisions)

    def refuse(holder: str) -> ReviewError:
        return ReviewError(f"{decisions} is in use by {holder}: wait until it finishes, then run this again "
                           f"(lock file {path})")

    return exclusive(path, what, refuse)
