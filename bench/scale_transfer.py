"""Moving a project's artifacts between machines, for bench/scale.py: `dvc push` to a remote and
`dvc pull` into a fresh clone, against a plain copy of the same bytes.

- local: a directory remote, against `cp -r` of the cached outs to a directory and back into another.
- s3: SeaweedFS's S3 gateway on 127.0.0.1 (tests/support/seaweedfs.py), against one tar of the same
  outs put as a single object and got back (the best an object store does with these bytes).

Each round trip ends with its copies deleted, so the disk holds one at a time."""

from __future__ import annotations

import fnmatch
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scale_measure import timed, usage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.seaweedfs import seaweedfs  # noqa: E402

log = logging.getLogger("bench.scale")
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def cached_outs(project: Path) -> list[str]:
    """The outs DVC caches (and so pushes): dvc.lock's outs that git does not track (cache: false ones are
    committed with the project; the cached ones are git-ignored)."""
    import yaml

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    in_git = set(subprocess.run(["git", "ls-files"], cwd=project, capture_output=True, text=True,
                                check=True).stdout.split())
    paths = [o["path"] for s in lock["stages"].values() for o in s.get("outs", [])]
    return sorted(p for p in paths if p not in in_git and (project / p).exists())


def commit_all(project: Path) -> None:
    subprocess.run(GIT + ["add", "-A"], cwd=project, check=True, capture_output=True)
    subprocess.run(GIT + ["commit", "-qm", "bench: dvc.lock and remote", "--allow-empty"], cwd=project, check=True,
                   capture_output=True)


def fresh_clone(project: Path, dest: Path, env: dict) -> Path:
    subprocess.run(["git", "clone", "-q", str(project), str(dest)], check=True, capture_output=True)
    subprocess.run(["dvc", "config", "--local", "core.site_cache_dir", str(dest / ".dvc" / "site-cache")], cwd=dest,
                   env=env, check=True, capture_output=True)
    return dest


def _dvcignored(project: Path) -> list[str]:
    f = project / ".dvcignore"
    lines = f.read_text().splitlines() if f.is_file() else []
    return [x.strip().strip("/") for x in lines if x.strip() and not x.startswith("#")]


def _same_outs(project: Path, clone: Path, outs: list[str]) -> bool:
    """The same files with the same sizes under every out (DVC-ignored files aside: the store's journal)."""
    pats = _dvcignored(project)

    def listing(root: Path) -> dict[str, int]:
        files = {}
        for o in outs:
            p = root / o
            for f in ([p] if p.is_file() else (x for x in p.rglob("*") if x.is_file())):
                rel = f.relative_to(root)
                if not any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in pats):
                    files[rel.as_posix()] = f.stat().st_size
        return files

    return listing(project) == listing(clone)


def plain_copy(project: Path, outs: list[str], work: Path) -> dict:
    """`cp -r` of the outs to a directory (the 'remote'), then from there into another (the 'clone')."""
    there, back = work / "plain-remote", work / "plain-clone"
    there.mkdir(parents=True)
    back.mkdir(parents=True)
    try:
        up = timed(["cp", "-r", "--parents", *outs, str(there)], project)
        down = timed(["cp", "-r", f"{there}/.", str(back)], work)
        return {"up_s": round(up, 2), "down_s": round(down, 2), "total_s": round(up + down, 2)}
    finally:
        shutil.rmtree(there, ignore_errors=True)
        shutil.rmtree(back, ignore_errors=True)


def selection(targets: list[str]) -> list[str]:
    """`dvc push`/`pull` arguments for a run of some stages only: the last one and its upstream (the
    project's dvc.lock also names the outs of the stages that did not run, which no cache holds)."""
    return ["--with-deps", *targets] if targets else []


def local_round_trip(project: Path, work: Path, env: dict, targets: list[str] = ()) -> dict:
    remote, clone = work / "remote-dir", work / "clone-local"
    outs = cached_outs(project)
    subprocess.run(["dvc", "remote", "add", "-f", "-d", "localdir", str(remote)], cwd=project, env=env, check=True,
                   capture_output=True)
    commit_all(project)
    try:
        push = timed(["dvc", "push", *selection(targets)], project, env)
        fresh_clone(project, clone, env)
        pull = timed(["dvc", "pull", *selection(targets)], clone, env)
        ok = _same_outs(project, clone, outs)
        remote_use = usage([remote])
    finally:
        shutil.rmtree(clone, ignore_errors=True)
        shutil.rmtree(remote, ignore_errors=True)
    plain = plain_copy(project, outs, work)
    return {"push_s": round(push, 2), "pull_s": round(pull, 2), "remote_files": remote_use.files,
            "remote_bytes": remote_use.bytes, "pulled_outs_identical": ok, "plain": plain,
            "plain_over_dvc": round(plain["total_s"] / (push + pull), 3)}


def _tar_round_trip(project: Path, outs: list[str], work: Path, s3) -> dict:
    import s3fs

    fs = s3fs.S3FileSystem(key=s3.env({})["AWS_ACCESS_KEY_ID"], secret=s3.env({})["AWS_SECRET_ACCESS_KEY"],
                           client_kwargs={"endpoint_url": s3.endpoint, "region_name": "us-east-1"})
    tar, got, unpacked = work / "outs.tar", work / "outs-got.tar", work / "tar-clone"
    key = f"{s3.bucket}/plain/outs.tar"
    try:
        pack = timed(["tar", "-cf", str(tar), *outs], project)
        put = _timed_call(lambda: fs.put_file(str(tar), key))
        get = _timed_call(lambda: fs.get_file(key, str(got)))
        unpacked.mkdir()
        unpack = timed(["tar", "-xf", str(got), "-C", str(unpacked)], work)
        fs.rm_file(key)
        total = pack + put + get + unpack
        return {"tar_s": round(pack, 2), "put_s": round(put, 2), "get_s": round(get, 2), "untar_s": round(unpack, 2),
                "total_s": round(total, 2), "bytes": tar.stat().st_size}
    finally:
        for p in (tar, got):
            p.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)


def _timed_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def s3_round_trip(project: Path, work: Path, env: dict, targets: list[str] = ()) -> dict:
    clone = work / "clone-s3"
    outs = cached_outs(project)
    with seaweedfs(work / "seaweedfs") as s3:
        s3.add_dvc_remote(project, name="s3", prefix="moeflow")
        commit_all(project)
        senv = s3.env(env)
        try:
            push = timed(["dvc", "push", *selection(targets)], project, senv)
            objects = s3.object_count("moeflow/")
            fresh_clone(project, clone, senv)
            pull = timed(["dvc", "pull", *selection(targets)], clone, senv)
            ok = _same_outs(project, clone, outs)
        finally:
            shutil.rmtree(clone, ignore_errors=True)
        store_disk = usage([work / "seaweedfs"]).disk
        tar = _tar_round_trip(project, outs, work, s3)
    subprocess.run(["dvc", "remote", "default", "localdir"], cwd=project, env=env, capture_output=True)
    return {"push_s": round(push, 2), "pull_s": round(pull, 2), "objects": objects, "server_disk_bytes": store_disk,
            "pulled_outs_identical": ok, "tar_object": tar, "tar_over_dvc": round(tar["total_s"] / (push + pull), 3)}
