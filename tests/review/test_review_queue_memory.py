"""The review queue's export holds one sprite page's thumbnails, not the whole queue's: Python's
peak allocation (tracemalloc) exporting 4N queued faces against N, with ~10 KB thumbnails (noise
does not compress), must grow by far less than the thumbnails added."""

from __future__ import annotations

import io
import tracemalloc

import pyarrow as pa

from tasks.artifacts.faces import ShardWriter
from tasks.params.review import ReviewConfig, ReviewOut
from tasks.review.queue import _thumbnail, export_queue
from tests.support.review import noise_png

SMALL, LARGE, SIZE = 500, 2000, 64



def test_the_queue_export_holds_one_page_of_thumbnails(tmp_path):
    pngs = [noise_png(s) for s in range(8)]
    buf = io.BytesIO()
    _thumbnail(pngs[0], SIZE).save(buf, "JPEG", quality=95)
    thumb_bytes = len(buf.getvalue())
    peaks = {}
    for n in (SMALL, LARGE):
        root = tmp_path / str(n)
        writer = ShardWriter(root / "crops", "q", rows_per_shard=256)
        rows = [{"face_id": f"{i * 7919 % n:06d}", "image_id": f"img{i}", "detector": "test",
                 "score": (i * 37 % 101) / 101, "url": ""} for i in range(n)]
        for i, r in enumerate(rows):
            r["shard"] = writer.add(r["face_id"], pngs[i % len(pngs)])
        writer.flush()
        kept = pa.Table.from_pylist([{"face_id": r["face_id"], "shard": r["shard"]} for r in rows])
        queue = pa.Table.from_pylist([{**r, "page_url": None} for r in rows], pa.schema(
            [(c, pa.string()) for c in ("face_id", "image_id", "detector")] + [("score", pa.float32())]
            + [(c, pa.string()) for c in ("url", "shard", "page_url")]))
        del rows
        cfg = ReviewConfig(thumb_size=SIZE, page_size=250, columns=20,
                           out=ReviewOut(queue=str(root / "queue.csv"), html=str(root / "queue.html"),
                                         thumbs=str(root / "thumbs")))
        tracemalloc.start()
        try:
            q = export_queue(cfg, queue, root / "crops")
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert q.pages == n // 250
        assert [p.name for p in (root / "thumbs").iterdir()] == [q.version]  # the spool is gone
    assert peaks[LARGE] - peaks[SMALL] < 0.4 * (LARGE - SMALL) * thumb_bytes, (peaks, thumb_bytes)
