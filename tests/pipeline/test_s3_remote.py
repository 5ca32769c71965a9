"""DVC's remote on a real object store: SeaweedFS's S3 gateway on 127.0.0.1 (tests/support/seaweedfs.py).

One small project copy (the 46 illustrations through fetch, scrape, detect, review, tag and release) pushes
its artifacts and its run-cache to the bucket; fresh clones then get them back three ways: `dvc pull`,
`dvc repro --pull` (nothing reruns: every stage's outs come from the remote by dvc.lock's hashes), and
`dvc repro --pull` with the run-cacheable stages left out of dvc.lock, where they are restored from the
pushed run-cache instead of rerun.

DVC run-caches a stage only when none of its outs is `persist` (dvc/stage/cache.py, `_can_hash`) and
every out that is neither a metric nor a plot is cached (dvc/stage/__init__.py, `run_cache=not
no_cache_outs`). Today that leaves fetch and release of these six; `run_cacheable` reads it from
dvc.yaml, so the test follows the DAG as it changes."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
import yaml

from tests.support.project import env, make_copy, run
from tests.support.seaweedfs import seaweedfs

STAGES = ["fetch", "scrape", "detect", "review", "tag", "release"]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
DVCIGNORED = {"journal.jsonl", ".tmp"}  # the scrape store's resume state (.dvcignore): not part of the artifact


def uncached(project: Path) -> set[str]:
    """The outs DVC leaves out of its cache (`cache: false`: metrics, stats), which no remote carries."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {o.def_path for o in repo.index.outs if not o.use_cache}


def md5_tree(project: Path) -> dict[str, str]:
    """md5 of every file under every cached out of STAGES that dvc.lock records (relative path -> md5)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    skip = uncached(project)
    out = {}
    for stage in STAGES:
        for o in (o for o in lock["stages"][stage]["outs"] if o["path"] not in skip):
            p = project / o["path"]
            files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
            for f in (f for f in files if not DVCIGNORED & set(f.relative_to(project).parts)):
                out[f.relative_to(project).as_posix()] = hashlib.md5(f.read_bytes()).hexdigest()
    return out


def cache_objects(project: Path) -> int:
    return sum(1 for f in (project / ".dvc" / "cache" / "files" / "md5").rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with seaweedfs(tmp_path_factory.mktemp("s3")) as s3:
        yield s3


@pytest.fixture(scope="module")
def pushed(store, tmp_path_factory):
    """The project after `dvc repro release`, its remote the bucket, pushed with its run-cache; dvc.lock committed."""
    project = make_copy(tmp_path_factory.mktemp("proj"))
    run(["dvc", "repro", "release"], project)
    store.add_dvc_remote(project, prefix="moeflow")
    run(GIT + ["add", "-A"], project)
    run(GIT + ["commit", "-qm", "data"], project)
    run(["dvc", "push", "--run-cache"], project, env=store.env(env()))
    return project


def clone(project: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(project), str(dest)], dest.parent)
    run(["dvc", "config", "--local", "core.site_cache_dir", str(dest / ".dvc" / "site-cache")], dest)
    return dest


def test_push_then_pull_into_a_fresh_clone(store, pushed, tmp_path):
    # every object of the local cache is in the bucket, and the run-cache beside them
    assert store.object_count("moeflow/files/md5/") == cache_objects(pushed) > 0
    assert store.object_count("moeflow/runs/") > 0
    fresh = clone(pushed, tmp_path / "clone")
    assert not (fresh / "data/faces/faces.parquet").exists()
    run(["dvc", "pull"] + STAGES, fresh, env=store.env(env()))
    want = md5_tree(pushed)
    assert "data/tags/tags.parquet" in want and any(k.startswith("data/raw/images/") for k in want)
    assert md5_tree(fresh) == want
    status = run(["dvc", "status"] + STAGES, fresh).stdout
    assert "changed" not in status and "missing" not in status, status


def test_repro_pull_restores_every_stage_without_running_it(store, pushed, tmp_path):
    fresh = clone(pushed, tmp_path / "clone")
    out = run(["dvc", "repro", "--pull", "release"], fresh, env=store.env(env())).stdout
    assert "Running stage" not in out, out
    assert md5_tree(fresh) == md5_tree(pushed)


def run_cacheable(project: Path, stage: str) -> bool:
    """Whether DVC saves `stage` in its run-cache: no persist out, no uncached out but metrics and plots."""
    for o in yaml.safe_load((project / "dvc.yaml").read_text())["stages"][stage].get("outs", []):
        flags = next(iter(o.values())) if isinstance(o, dict) else {}
        if flags.get("persist") or flags.get("cache") is False:
            return False
    return True


def test_run_cache_restores_stages_that_dvc_lock_does_not_record(store, pushed, tmp_path):
    """A clone whose dvc.lock lacks some stages (another branch, other params run before): `dvc repro --pull`
    finds each run-cacheable one in the pushed run-cache and checks its outs out instead of running it. The
    other stages keep their dvc.lock entries, so their outs are pulled by hash: nothing runs at all."""
    cacheable = [s for s in STAGES if run_cacheable(pushed, s)]
    assert "release" in cacheable  # a real pipeline stage, not only fetch's one file
    fresh = clone(pushed, tmp_path / "clone")
    lock = yaml.safe_load((fresh / "dvc.lock").read_text())
    for stage in cacheable:
        del lock["stages"][stage]
    (fresh / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    r = run(["dvc", "repro", "--pull", "release"], fresh, env=store.env(env()))
    out = r.stdout + r.stderr
    assert "Running stage" not in out, out
    for stage in cacheable:
        assert f"Stage '{stage}' is cached - skipping run" in out, (stage, out)
    assert md5_tree(fresh) == md5_tree(pushed)


def test_the_store_is_stopped_and_gone(tmp_path):
    """The fixture's server stops and leaves nothing: its port is closed and its directory removed."""
    with seaweedfs(tmp_path / "s3") as s3:
        assert s3.request("PUT", f"{s3.bucket}/x", b"1")[0] == 200
        pid, port = s3.proc.pid, s3.ports["s3.port"]
    assert s3.proc.poll() is not None and not (tmp_path / "s3").exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} of pid {pid} still open"
