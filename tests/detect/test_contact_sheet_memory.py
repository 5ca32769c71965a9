"""detect's contact sheet draws the 64 lowest face_ids, which lie in every shard: it reads those
crops of each shard, not whole shards (issue 22: at 16 k images it was the stage's peak, growing
with the number of shards). Python's peak allocation (tracemalloc) drawing 16 faces out of 8 shards
of 512 noise crops must stay far below one shard's crops."""

from __future__ import annotations

import io
import tracemalloc

import pyarrow as pa
from PIL import Image

from tasks.artifacts.faces import ShardWriter
from tasks.detect.run import contact_sheet
from tests.support.review import noise_png


def test_the_contact_sheet_reads_its_sample_not_whole_shards(tmp_path):
    pngs = [noise_png(s, 48) for s in range(16)]
    writer = ShardWriter(tmp_path / "crops", "c", rows_per_shard=512)
    rows = []
    for i in range(8 * 512):
        fid = f"{(i % 512) * 8 + i // 512:06d}"  # shard k holds k, k+8, ...: the lowest ids are in every shard
        rows.append({"face_id": fid, "shard": writer.add(fid, pngs[i % len(pngs)]), "drop_reason": None})
    writer.flush()
    faces = pa.Table.from_pylist(rows)
    shard_bytes = 512 * len(pngs[0])
    tracemalloc.start()
    try:
        sheet = contact_sheet(faces, tmp_path / "crops", 16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len({r["shard"] for r in rows if r["face_id"] < "000016"}) == 8
    assert peak < 0.3 * shard_bytes, (peak, shard_bytes)
    img = Image.open(io.BytesIO(sheet))
    assert img.size == (8 * 64, 2 * 64) and len(set(img.getdata())) > 1000  # 16 noise crops drawn
