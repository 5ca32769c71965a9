"""One stage at a time in a workspace (issue 21, item 16): every stage entry point holds the
workspace's stage lock (tasks.lock, reports/stage.lock), and a second one started meanwhile stops at
once with one `error:` line naming the holder (stage, pid, since when), exit 75, writing nothing.
The lock is the kernel's (flock): a holder killed with SIGKILL leaves none behind."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tasks.errors import ReviewError
from tasks.lock import BUSY_EXIT, STAGE_LOCK, Busy, stage_lock
from tasks.review.lock import decisions_lock
from tests.conftest import ROOT, deep_update
from tests.support.project import make_copy, run
from tests.support.scrape import OPTOUT_HEADER

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def params_file(tmp_path: Path, name: str, scrape: dict) -> Path:
    base = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    p = tmp_path / name
    p.write_text(yaml.safe_dump(deep_update(base, {"scrape": scrape}), sort_keys=False), encoding="utf-8")
    return p


def stage(cwd: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for_holder(lock: Path, proc: subprocess.Popen, what: str) -> str:
    for _ in range(1200):  # the holder has the lock once it names itself in the lock file
        text = lock.read_text() if lock.exists() else ""
        if text.startswith(f"{what} (pid {proc.pid}, since "):
            return text.strip()
        assert proc.poll() is None, proc.communicate()
        threading.Event().wait(0.05)
    pytest.fail(f"{what} never took the lock")


def test_a_second_stage_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    fifo = tmp_path / "optout.csv"
    os.mkfifo(fifo)  # scrape blocks reading optout.csv: it holds the lock until killed
    holding = params_file(tmp_path, "holding.yaml", {"source": "folder", "folder": str(tmp_path), "optout": str(fifo),
                                                     "out": {"images": str(tmp_path / "images")}})
    first = stage(ws, "tasks.scrape", "--params", str(holding))
    try:
        holder = wait_for_holder(ws / STAGE_LOCK, first, "scrape")
        second = stage(ws, "tasks.detect", "--params", str(holding), "--manifest", "m.parquet", "--images", "i",
                       "--boxes", "b.parquet")
        out, err = second.communicate(timeout=120)
        assert second.returncode == BUSY_EXIT, err
        assert err.count("\n") == 1 and err.startswith("error: another stage is running in this workspace: "), err
        assert f": {holder};" in err and f"(lock file {STAGE_LOCK})" in err
        assert sorted(p.name for p in ws.rglob("*")) == ["reports", "stage.lock"]  # the refused run wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    # the kernel released the killed holder's lock, though the file still names it
    assert (ws / STAGE_LOCK).read_text().startswith(f"scrape (pid {first.pid}")
    (tmp_path / "none.csv").write_text(OPTOUT_HEADER)
    missing = params_file(tmp_path, "missing.yaml", {"source": "folder", "folder": str(tmp_path / "nowhere"),
                                                     "optout": str(tmp_path / "none.csv")})
    again = stage(ws, "tasks.scrape", "--params", str(missing))
    _, err = again.communicate(timeout=120)
    assert again.returncode == 1 and "is not a directory" in err and "another stage" not in err, err
    assert (ws / STAGE_LOCK).read_text() == ""  # idle


def test_one_helper_holds_both_locks(tmp_path):
    with stage_lock("train", tmp_path):
        with pytest.raises(Busy, match=r"another stage is running in this workspace: train \(pid \d+, since 20"):
            with stage_lock("render", tmp_path):
                pass
    with stage_lock("render", tmp_path):  # released on leaving the block
        pass
    csv = tmp_path / "decisions.csv"
    with decisions_lock(csv, "merge"):
        with pytest.raises(ReviewError, match=r"decisions.csv is in use by merge \(pid \d+, since 20"):
            with decisions_lock(csv, "the review stage"):
                pass


def test_a_forked_worker_does_not_keep_the_lock(tmp_path):
    """A stage's forked workers (DataLoader, process pools) get a copy of every descriptor; the
    lock must still end with the stage, not with the last worker."""
    read, write = os.pipe()
    started_r, started_w = os.pipe()
    with stage_lock("tag", tmp_path):
        pid = os.fork()
        if pid == 0:  # the worker: says it runs, then waits until told to go
            os.write(started_w, b"x")
            os.read(read, 1)
            os._exit(0)
        os.read(started_r, 1)  # the worker runs (what happens at a fork is done)
    os.close(started_r)
    os.close(started_w)
    try:
        with stage_lock("tag", tmp_path):  # the stage let go while its worker still runs
            pass
    finally:
        os.close(read)
        os.write(write, b"x")
        os.close(write)
        os.waitpid(pid, 0)


def test_dvc_repro_meets_the_lock_of_a_stage_run_by_hand(tmp_path):
    """`dvc repro` lets go of DVC's own lock while a stage's command runs, so the stage lock is what
    keeps a second run out: its stage stops with the one line, and DVC reports that stage failed."""
    (tmp_path / "project").mkdir()
    project = make_copy(tmp_path / "project")
    fifo = tmp_path / "optout.csv"
    os.mkfifo(fifo)
    holding = params_file(tmp_path, "holding.yaml", {"source": "folder", "folder": str(tmp_path), "optout": str(fifo),
                                                     "out": {"images": str(tmp_path / "images")}})
    first = stage(project, "tasks.scrape", "--params", str(holding))
    try:
        holder = wait_for_holder(project / STAGE_LOCK, first, "scrape")
        r = run(["dvc", "repro", "scrape"], project, check=False)
        assert r.returncode != 0
        assert f"error: another stage is running in this workspace: {holder};" in r.stdout + r.stderr
        assert not (project / "dvc.lock").exists() and not (project / "data/raw/manifest.parquet").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)


def _raw_holder(path: Path) -> int:
    """A holder caught in the instant between taking the lock and writing its name."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_holder_not_yet_named_is_waited_for_not_reported_as_nobody(tmp_path):
    """Six merges at once met a holder that had the lock but had not yet written its name, and
    were refused with 'in use by another process'. The refused one now waits for the name."""
    csv = tmp_path / "decisions.csv"
    lock = tmp_path / "decisions.csv.lock"
    fd = _raw_holder(lock)
    naming = threading.Timer(0.3, lambda: os.pwrite(fd, b"merge (pid 1, since 2026-01-01T00:00:00+00:00)\n", 0))
    naming.start()
    try:
        with pytest.raises(ReviewError, match=r"is in use by merge \(pid 1, since 2026"):
            with decisions_lock(csv, "merge"):
                pass
    finally:
        naming.join()
        os.close(fd)
    fd = _raw_holder(lock)  # a holder that empties the file and lets go: the second one gets the lock
    os.ftruncate(fd, 0)
    letting_go = threading.Timer(0.3, os.close, (fd,))
    letting_go.start()
    try:
        with decisions_lock(csv, "merge"):
            assert lock.read_text().startswith(f"merge (pid {os.getpid()}, since ")
    finally:
        letting_go.join()
    fd = _raw_holder(lock)  # one that never names itself is reported as such, after the wait
    os.ftruncate(fd, 0)
    try:
        with pytest.raises(ReviewError, match=r"is in use by another process"):
            with decisions_lock(csv, "merge"):
                pass
    finally:
        os.close(fd)
