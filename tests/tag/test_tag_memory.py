"""What the tag stage holds per face, before any crop is read: the batch plan the loader sends to
every worker, and the colour backend's batches of detector colours. Both were Python objects a face
(a (shard, face_id) tuple; lists of ids and colours made from whole columns); they are Arrow columns
and one batch of Python rows now, so a million faces do not cost a million tuples in each process."""

from __future__ import annotations

import hashlib
import tracemalloc

import pyarrow as pa

from tasks.artifacts.faces import RGB
from tasks.params.tag import TagConfig
from tasks.taggers.backends import ColorBackend
from tasks.taggers.loader import plan_batches, work_units
from tasks.typed import build

N = 20_000


def _faces(n: int, colours: bool) -> pa.Table:
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]  # 64 hex digits, as the stage's ids
    shards = [f"shard-{hashlib.sha256(str(i // 8192).encode()).hexdigest()[:24]}.parquet" for i in range(n)]
    rgb = [(200, 100 + i % 50, 50) for i in range(n)] if colours else [None] * n
    return pa.table({"face_id": pa.array(ids, pa.string()), "shard": pa.array(shards, pa.string()),
                     "hair_rgb": pa.array(rgb, RGB), "eye_rgb": pa.array(rgb, RGB)})


def _held_per_face(make) -> float:
    """Bytes a face of what `make()` returns and keeps: Python's allocations plus Arrow's."""
    tracemalloc.start()
    py0, arrow0 = tracemalloc.get_traced_memory()[0], pa.total_allocated_bytes()
    kept = make()
    held = tracemalloc.get_traced_memory()[0] - py0 + pa.total_allocated_bytes() - arrow0
    tracemalloc.stop()
    del kept
    return held / N


def test_the_batch_plan_costs_arrow_bytes_a_face_not_a_python_tuple():
    faces = _faces(N, colours=False)

    def plan():
        p = plan_batches(faces, 64)
        return p, work_units(p)

    p, units = plan()
    assert sum(len(b) for b in p) == N and sum(len(u) for u in units) == len(p)
    # a 64-hex id and the shard as a dictionary index: ~76 bytes; a (shard, face_id) tuple of Python
    # strings in a list was ~260
    assert _held_per_face(plan) < 110


def test_colour_batches_make_one_batch_of_rows_python_at_a_time():
    faces = _faces(N, colours=True)
    cfg = build(TagConfig, {"backend": "color", "workers": 0, "threads": 1, "batch_size": 64}, "tag")
    backend = ColorBackend(cfg)
    tracemalloc.start()
    seen = 0
    for batch in backend.batches(faces, "unused: every face has detector colours"):
        seen += len(batch.face_ids)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seen == N
    # one batch's ids and colours (a few KB) and the filtered Arrow table (not traced); whole columns
    # as Python lists were ~450 bytes a face
    assert peak / N < 40
