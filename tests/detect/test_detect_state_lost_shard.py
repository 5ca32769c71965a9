"""A crop shard deleted from under the state (by hand, a partial restore): the images with crops in
it are redone, and the rerun ends on the very bytes of a clean run (real illustrations)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from tasks.detect.run import detect
from tests.support.detect import REAL, config, tree, write_manifest


def test_the_images_of_a_lost_shard_are_redone(tmp_path, caplog):
    files = sorted(REAL.iterdir())[:10]
    write_manifest(tmp_path / "m.parquet", files, tmp_path)
    clean = config(tmp_path / "clean", shard_rows=3, workers=1)
    detect(clean, tmp_path / "m.parquet", tmp_path, progress=False)

    cfg = config(tmp_path / "again", shard_rows=3, workers=1)
    detect(cfg, tmp_path / "m.parquet", tmp_path, progress=False)
    faces = pq.read_table(cfg.out.faces).to_pylist()
    shard = sorted({r["shard"] for r in faces if r["shard"]})[0]
    lost = {r["image_id"] for r in faces if r["shard"] == shard}
    (Path(cfg.out.crops) / shard).unlink()
    summary = detect(cfg, tmp_path / "m.parquet", tmp_path, progress=False)
    assert (summary.processed, summary.reused) == (len(lost), 10 - len(lost))
    assert f"{len(lost)} images have crops in shards missing" in caplog.text
    want, got = tree(tmp_path / "clean"), tree(tmp_path / "again")
    assert sorted(got) == sorted(want)
    assert [n for n in want if want[n] != got[n]] == []
