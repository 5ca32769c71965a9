"""runner: dask runs the same per-image work on a (local, 1-process) Dask cluster."""

from __future__ import annotations

import pytest

from tasks.artifacts.faces import read_faces
from tasks.detect.run import detect
from tests.support.detect import REAL, config, write_manifest

FILES = ["afdr_detect_07.jpg", "s2p_25.png", "s2p_16.png"]


def test_dask_runner_matches_processes(tmp_path):
    distributed = pytest.importorskip("distributed")
    files = [REAL / n for n in FILES]
    write_manifest(tmp_path / "m.parquet", files, tmp_path)
    local = config(tmp_path / "local", workers=1)
    detect(local, tmp_path / "m.parquet", tmp_path, progress=False)
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    try:
        cfg = config(tmp_path / "dask", runner="dask", dask_address=cluster.scheduler_address)
        summary = detect(cfg, tmp_path / "m.parquet", tmp_path, progress=False)
    finally:
        cluster.close()
    assert summary.processed == 3
    a, b = read_faces(local.out.faces), read_faces(cfg.out.faces)
    assert a.num_rows >= 2 and a.drop(["shard"]).equals(b.drop(["shard"]))
