"""One process at a time: the one lock helper of moeflow (stdlib only).

`exclusive(path, what, refuse)` holds an advisory `flock` on `path` for as long as the block runs.
The kernel releases it when the process ends, however it ends (kill -9 included), so a killed
holder never leaves a stale lock (a worker it forked drops its copy of the lock at once). A second
process does not wait for it to finish: it gets the exception `refuse(holder)` makes, where `holder`
is what the first one wrote into the file: `<what> (pid N, since <UTC time>)`. The file stays (empty
when idle); met in the instant between a holder's lock and its name, the second one waits for the
name (or the lock).

Two users:
- every stage entry point (`tasks.stage.main`) holds the workspace's stage lock, `STAGE_LOCK`
  (reports/stage.lock under the directory it runs in: the project root under `dvc repro`), so two
  stages never run at once in one workspace (`dvc repro` runs them one at a time anyway, and lets go
  of its own lock while a stage's command runs: a second `dvc repro` meets this one);
- the reviewer's files: `merge` and the review stage hold `<decisions CSV>.lock`."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from tasks.errors import MoeflowError

STAGE_LOCK = Path("reports") / "stage.lock"  # relative to the workspace (the stage's working directory)
BUSY_EXIT = 75  # EX_TEMPFAIL: another stage holds the workspace; run it again once that one ends


class Busy(MoeflowError):
    """Another process holds the lock: one line naming it."""

    exit_code = BUSY_EXIT


_held: set[int] = set()  # descriptors of the locks this process holds


def _forget_in_child() -> None:
    """A forked child (a DataLoader or process-pool worker) gets a copy of every descriptor, and a
    flock lasts while any copy is open: the child lets go of its copies, so the lock ends with the
    process that took it, not with the last of its workers."""
    while _held:
        os.close(_held.pop())


os.register_at_fork(after_in_child=_forget_in_child)


NAMING_S = 2.0  # how long a refused process waits for a holder that has the lock but no name in it yet


def _take(fd: int, refuse: Callable[[str], Exception]) -> None:
    """Take the lock, or raise `refuse(holder)`. A holder names itself just after it takes the lock
    and empties the file just before it lets go: a lock held over an empty file is one of those two
    moments, so this polls (up to NAMING_S) until the holder is named or gone, never names nobody."""
    deadline = time.monotonic() + NAMING_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip()
            if holder or time.monotonic() >= deadline:
                raise refuse(holder or "another process") from None
            time.sleep(0.01)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str, refuse: Callable[[str], Exception]) -> Iterator[None]:
    """Hold the lock at `path` while `what` (e.g. "detect") runs, or raise `refuse(holder)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _take(fd, refuse)
        _held.add(fd)
        since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        name = f"{what} (pid {os.getpid()}, since {since})\n".encode()
        os.pwrite(fd, name, 0)  # then cut what a killed holder left: the file is never empty while held
        os.ftruncate(fd, len(name))
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # an idle lock file is empty
    finally:
        _held.discard(fd)
        os.close(fd)  # closing the last descriptor releases the lock


def stage_lock(stage: str, root: str | Path = ".") -> contextlib.AbstractContextManager[None]:
    """The workspace lock a stage holds while it runs; a second stage gets one `error:` line (exit 75)."""
    path = Path(root) / STAGE_LOCK

    def refuse(who: str) -> Busy:
        return Busy(f"another stage is running in this workspace: {who}; wait until it finishes, then run "
                    f"it again (lock file {path})")

    return exclusive(path, stage, refuse)
