"""queue.csv as the reviewer edits it: a file of its own, not a link into DVC's cache.

The committed `.dvc/config` links every out into DVC's cache (`cache.type hardlink,symlink`, one copy
of every byte), read-only. queue.csv is the one out a person edits in place: a spreadsheet saving over
a read-only file fails, and one saving as root (or after a chmod) writes through the link into the
cache object, whose bytes then no longer match its name. `dvc unprotect` replaces the link with a
writable copy of the same bytes (`dvc status` stays clean; the stage's next commit links it again).
`make demo` and the pipeline flow's review stop do it; `python -m tasks.review edit` does it by hand
(after a plain `dvc repro` or a `dvc pull`)."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from tasks.dag import dvc_executable
from tasks.errors import ReviewError

log = logging.getLogger(__name__)


def linked(path: Path) -> bool:
    """Whether `path` is a symlink or a file with another hard link (a DVC cache object)."""
    return path.is_symlink() or (path.is_file() and path.stat().st_nlink > 1)


def make_editable(queue: str | os.PathLike, root: str | os.PathLike = ".") -> bool:
    """`dvc unprotect` the queue if DVC linked it (True), nothing if it is already a file of its own
    (False). A missing queue is an error naming the command that writes it."""
    path = Path(root) / queue
    if not path.exists():
        raise ReviewError(f"{queue}: file not found (export the queue first: `dvc repro review`)")
    if not linked(path):
        return False
    done = subprocess.run([dvc_executable(), "unprotect", str(queue)], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise ReviewError(f"dvc unprotect {queue} failed: {last}")
    if linked(path):
        raise ReviewError(f"{queue}: still linked after `dvc unprotect` (is it tracked by DVC here?)")
    log.info("review: %s is a writable copy now (DVC had linked it read-only into its cache)", queue)
    return True
