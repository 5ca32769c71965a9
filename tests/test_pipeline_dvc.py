"""`dvc repro` end to end on a throwaway copy of the project: repro, no-op, param change,
a kill during detect, and a push/pull round trip through a local directory remote."""

import json
import os
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from tests.project import env, make_copy, run

FIRST = ["scrape", "detect", "review"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_copy(tmp_path_factory.mktemp("proj"))


def test_repro_noop_and_kill_during_detect_then_push_pull(project, tmp_path):
    # kill `dvc repro` while detect runs, then rerun: it completes and matches a clean run
    run(["dvc", "repro", "scrape"], project)
    proc = subprocess.Popen(["dvc", "repro", "detect"], cwd=project, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    faces = project / "data" / "faces"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(faces.glob("crops/*")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run(["dvc", "repro", "review"], project)
    status = run(["dvc", "status"] + FIRST, project).stdout
    assert "up to date" in status.lower() or status.strip() == "", status
    faces_table = pq.read_table(faces / "faces.parquet")
    kept = [r for r in faces_table.to_pylist() if r["drop_reason"] is None]
    assert len({r["image_id"] for r in faces_table.to_pylist()}) >= 30  # as for a clean run on the 46 illustrations
    assert len(kept) > 0

    # nothing changed: nothing reruns
    out = run(["dvc", "repro"] + FIRST, project).stdout  # its speed is bench/dvc_noop.py's business
    assert "didn't change, skipping" in out and "Running stage" not in out

    # a review param reruns review only
    params = project / "params.yaml"
    text = params.read_text()
    assert "thumb_size: 96" in text
    params.write_text(text.replace("thumb_size: 96", "thumb_size: 48"))
    out = run(["dvc", "repro"] + FIRST, project).stdout
    assert "Running stage 'review'" in out and "Running stage 'detect'" not in out and "Running stage 'scrape'" not in out

    # push to a local remote, then a fresh clone pulls every artifact back
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], project)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(git + ["add", "-A"], project)
    run(git + ["commit", "-qm", "data"], project)
    run(["dvc", "push"] + FIRST, project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["dvc", "config", "--local", "core.site_cache_dir", str(clone / ".dvc" / "site-cache")], clone)
    run(["dvc", "pull"] + FIRST, clone)
    for rel in ("data/raw/manifest.parquet", "data/faces/faces.parquet", "review/queue.csv"):
        assert (clone / rel).read_bytes() == (project / rel).read_bytes(), rel
    status = run(["dvc", "status"] + FIRST, clone).stdout
    assert "changed" not in status, status
