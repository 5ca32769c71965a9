"""`dvc repro` end to end on a throwaway copy of the project: repro, no-op, param change,
a kill during detect, and a push/pull round trip through a local directory remote."""

import json
import os
import signal
import subprocess
import time
from dataclasses import replace

import pyarrow.parquet as pq
import pytest

from tasks.detect.run import detect
from tasks.detect.state import read_saved
from tasks.detect.work import is_final
from tasks.params.all import load_params
from tasks.params.detect import DetectOut
from tests.support.detect import tree
from tests.support.project import env, make_copy, run

FIRST = ["fetch", "scrape", "detect", "review"]
SHARD_ROWS = 4  # crops per shard: the state is saved every few images, so a kill lands mid-run


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_copy(tmp_path_factory.mktemp("proj"), {"detect": {"shard_rows": SHARD_ROWS}})


def clean_detect(project, out):
    """detect on the copy's own manifest and params, from nothing, into `out`."""
    cfg = load_params(project / "params.yaml").detect
    out_cfg = DetectOut(crops=str(out / "crops"), faces=str(out / "faces.parquet"), images=str(out / "images.parquet"),
                        detector=str(out / "detector.json"), contact_sheet=str(out / "contact_sheet.png"),
                        summary=str(out / "summary.json"),
                        metrics=str(out / "metrics.json"))
    cfg = replace(cfg, cascade=str(project / cfg.cascade), out=out_cfg)  # the copy's cascade (its fetch stage's)
    detect(cfg, project / "data/raw/manifest.parquet", project / "data/raw/images", progress=False)
    return tree(out)


def test_repro_noop_and_kill_during_detect_then_push_pull(project, tmp_path):
    # SIGKILL `dvc repro` (and its whole process group) in the middle of detect, then rerun
    run(["dvc", "repro", "scrape"], project)
    n_images = pq.read_table(project / "data/raw/manifest.parquet").num_rows
    proc = subprocess.Popen(["dvc", "repro", "detect"], cwd=project, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    faces = project / "data" / "faces"
    deadline = time.monotonic() + 180  # until a first save (a delta of the state, tasks/detect/state.py)
    while time.monotonic() < deadline and not read_saved(faces / "crops")[0] and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # the images whose outcome stands: a worker the kill reached first leaves a transient row, redone
    done_before = sum(is_final(r["status"], r["reason"]) for r in read_saved(faces / "crops")[0].values())
    assert 0 < done_before < n_images and not (faces / "faces.parquet").exists(), "the kill was not mid-run"

    r = run(["dvc", "repro", "review"], project)
    assert f"{done_before} done earlier with the same params" in r.stdout + r.stderr  # resumed, not redone
    status = run(["dvc", "status"] + FIRST, project).stdout
    assert "up to date" in status.lower() or status.strip() == "", status
    # the resumed run reused the killed run's work and ends where a clean run ends, byte for byte:
    # faces.parquet row for row, images.parquet, every crop shard, the state, the summary
    resumed = {n: b for n, b in tree(faces).items() if n != ".gitignore"}  # DVC's, not detect's
    clean = clean_detect(project, tmp_path / "clean")
    assert sorted(resumed) == sorted(clean)
    # the detector spec names the cascade by the path configured (the clean run's is absolute)
    assert [n for n in clean if clean[n] != resumed[n]] == ["detector.json"]
    specs = [json.loads(s) for s in (clean["detector.json"], resumed["detector.json"])]
    for s in specs:
        s["settings"].pop("cascade")
    assert specs[0] == specs[1] and len(specs[0]["cascade_sha256"]) == 64
    assert pq.read_table(faces / "faces.parquet").equals(pq.read_table(tmp_path / "clean/faces.parquet"))
    assert pq.read_table(faces / "images.parquet").num_rows == n_images

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
