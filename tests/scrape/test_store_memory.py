"""What the image store holds per post (issue: every stage's peak memory bounded): the journal is
replayed a line at a time, the tables hold slim records, the index and the tables are written
without a copy of the whole state; and none of that changes a byte of what the store writes."""

from __future__ import annotations

import gc
import hashlib
import json
import tracemalloc
from datetime import datetime
from pathlib import Path

import pytest

from tasks.artifacts.images import MANIFEST_SCHEMA, REJECTED_SCHEMA, write_manifest, write_rejected
from tasks.fileio import write_parquet
from tasks.scrape import packs
from tasks.scrape.store import Store


def synthetic_store(root: Path, n: int) -> None:
    """A store of n folder posts as a finished run leaves it: kept images in packs (sparse files of
    the size their records give), every 10th post a duplicate, every 25th rejected."""
    (root / "packs").mkdir(parents=True)
    lines, kept = [], []
    for i in range(n):
        name = f"faces/img_{i:07d}_face_{i % 997}.png"
        ids = {"source": "folder", "post_id": name, "url": f"file:{name}",
               "stat": [32768, 40000 + i, 1796401038914409326 + i]}
        sha = hashlib.sha256(str(i).encode()).hexdigest()
        if i % 25 == 7:
            lines.append({"kind": "rejected", **ids, "reason": "too_small", "detail": f"{name}: 30x30", "final": True,
                          "at": None, "sha256": sha})
        elif i % 10 == 3:
            lines.append({"kind": "duplicate", **ids, "image_id": kept[-1]["image_id"], "at": None})
        else:
            rec = {"kind": "kept", **ids, "image_id": sha, "pack": f"{sha[:2]}/{sha}.png", "offset": 0,
                   "length": 40000 + i, "page_url": None, "width": 160, "height": 149, "format": "PNG",
                   "bytes": 40000 + i, "tags": ["1girl", "solo"] if i % 2 else [], "rating": None,
                   "artist": "someone" if i % 3 else None, "title": None, "character": None, "fetched_at": None}
            lines.append(rec)
            kept.append(rec)
    kept.sort(key=lambda r: r["image_id"])
    for start in range(0, len(kept), 4000):
        group, rel = kept[start:start + 4000], packs.pack_name(start // 4000 + 1)
        offsets, size = packs.layout(r["length"] for r in group)
        lines.append({"kind": "packed", "pack": rel,
                      "members": [[r["image_id"], o, r["length"]] for r, o in zip(group, offsets)]})
        with open(root / rel, "wb") as f:
            f.truncate(size)
    (root / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def traced(fn):
    """(what fn's result holds, fn's peak): bytes tracemalloc counts."""
    gc.collect()
    tracemalloc.start()
    try:
        out = fn()
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, held, peak


def per_post(tmp_path: Path, phase) -> tuple[float, float]:
    """Bytes per post that `phase(store_root)` holds and peaks at, from 1,000 and 5,000 posts (the
    difference: fixed costs cancel)."""
    out = []
    for n in (1000, 5000):
        root = tmp_path / str(n)
        synthetic_store(root, n)
        _, held, peak = traced(lambda: phase(root))
        out.append((held, peak))
    return tuple((big - small) / 4000 for small, big in zip(*out))


def test_a_loaded_store_holds_under_a_kilobyte_a_post(tmp_path):
    stores = []

    def load(root):
        stores.append(Store(str(root)))  # held: what a run holds while it lists and fetches

    held, peak = per_post(tmp_path, load)
    for s in stores:
        s.close()
    # measured 0.80 KB held and 1.20 KB at the peak (a `packed` line of 4,000 members parsed at once);
    # a journal read whole into dicts: 2.4 and 3.8 KB
    assert held < 1000 and peak < 1500, (held, peak)


def test_writing_the_index_and_the_tables_copies_no_state(tmp_path):
    peaks = []
    for n in (1000, 5000):
        root = tmp_path / str(n)
        synthetic_store(root, n)
        store = Store(str(root))
        try:
            store.write_manifest(str(root / "warm.parquet"))  # pyarrow's first use: not what the store holds
            peaks.append([traced(store.write_index)[2],
                          traced(lambda: store.write_manifest(str(root / "manifest.parquet")))[2],
                          traced(lambda: store.write_rejected(str(root / "rejected.parquet")))[2]])
        finally:
            store.close()
    extra = [(big - small) / 4000 for small, big in zip(*peaks)]
    # measured ~10, ~35 and ~5 bytes a post (sorted lists, a column of values); the whole index as
    # one string, or every row as a dict: ~2.7 and ~1.4 KB
    assert max(extra) < 200, extra


def test_a_journal_line_cut_by_a_kill_is_dropped_however_long(tmp_path):
    synthetic_store(tmp_path, 30)
    journal = tmp_path / "journal.jsonl"
    whole = journal.read_bytes()
    cut = json.dumps({"kind": "kept", "source": "folder", "post_id": "x", "tags": ["t"] * 40000})[:-7]
    journal.write_bytes(whole + cut.encode())  # longer than the blocks the store reads back from the end
    store = Store(str(tmp_path))
    try:
        assert len(store.kept) == sum(1 for i in range(30) if i % 25 != 7 and i % 10 != 3)
    finally:
        store.close()
    assert journal.read_bytes().startswith(whole) and b'"post_id": "x"' not in journal.read_bytes()


def rows(n: int) -> list[dict]:
    """Manifest records whose optional fields are null in some stretches only."""
    out = []
    for i in range(n):
        sha = hashlib.sha256(str(i).encode()).hexdigest()
        out.append({"kind": "kept", "source": "folder", "post_id": f"p{i}", "url": None if i < 5 else f"file:p{i}",
                    "image_id": sha, "pack": "packs/000001.tar", "offset": 512 * i, "length": 100 + i,
                    "page_url": None, "width": 64, "height": 64, "format": "PNG", "bytes": 100 + i,
                    "tags": ["a", "b"] if i % 3 else [], "rating": None, "artist": None, "title": None,
                    "character": None, "fetched_at": None if i < 7 else "2026-12-01T10:00:00+00:00"})
    return out


def one_row(rec: dict, schema) -> dict:
    """A record as a row of `schema`, as the tables were written before: a dict per row."""
    row = {f.name: rec.get(f.name) for f in schema}
    return {k: datetime.fromisoformat(v) if k in ("at", "fetched_at") and isinstance(v, str) else v
            for k, v in row.items()}


@pytest.mark.parametrize("n", [0, 1, 10, 25])
def test_tables_written_a_column_at_a_time_are_the_bytes_of_their_rows(tmp_path, n):
    recs = rows(n)
    rejected = [{**r, "kind": "rejected", "reason": "too_small", "detail": "", "final": i % 2 == 0,
                 "at": r["fetched_at"]} for i, r in enumerate(recs)]
    whole = {}
    for name, schema, table, key in (("m", MANIFEST_SCHEMA, recs, lambda r: r["image_id"]),
                                     ("r", REJECTED_SCHEMA, rejected, lambda r: (r["source"], r["post_id"]))):
        write_parquet(tmp_path / f"{name}.parquet", [one_row(r, schema) for r in sorted(table, key=key)], schema)
        whole[name] = (tmp_path / f"{name}.parquet").read_bytes()
    write_manifest(tmp_path / "m3.parquet", reversed(recs))
    write_rejected(tmp_path / "r3.parquet", iter(rejected))
    assert (tmp_path / "m3.parquet").read_bytes() == whole["m"]
    assert (tmp_path / "r3.parquet").read_bytes() == whole["r"]
