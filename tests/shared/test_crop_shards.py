"""Crop shards are written in row groups of SHARD_GROUP_ROWS (issue 22): a reader of some crops reads
the groups that hold them, never the whole shard, so what the readers hold (CropReader, the tag
loader) does not grow with `detect.shard_rows`. Shards written before (one group, or no statistics)
read as before."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.artifacts.faces import (
    CROPS_SCHEMA,
    SHARD_GROUP_ROWS,
    CropReader,
    read_shard,
    shard_groups,
    write_shard,
)
from tasks.errors import DataError
from tasks.fileio import atomic_open


def crops(n: int) -> dict[str, bytes]:
    return {hashlib.sha256(str(i).encode()).hexdigest(): f"png-{i}".encode() * 50 for i in range(n)}


def faces_table(shards: dict[str, dict[str, bytes]]) -> pa.Table:
    rows = [(fid, name) for name, c in shards.items() for fid in c]
    return pa.table({"face_id": [f for f, _ in rows], "shard": [s for _, s in rows]})


@pytest.fixture
def groups_read(monkeypatch):
    """The row groups each read of a shard's parts asks for."""
    seen: list[int] = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, *a, **k):
        seen.append(i)
        return real(self, i, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    return seen


def test_a_shard_is_row_groups_of_sorted_crops(tmp_path):
    c = crops(2 * SHARD_GROUP_ROWS + 44)
    name = write_shard(tmp_path, c)
    assert write_shard(tmp_path, dict(reversed(list(c.items())))) == name  # content named: the same crops, the same file
    meta = pq.ParquetFile(tmp_path / name).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [SHARD_GROUP_ROWS, SHARD_GROUP_ROWS, 44]
    ids = sorted(c)
    bounds = [(ids[a], ids[min(a + SHARD_GROUP_ROWS, len(ids)) - 1]) for a in range(0, len(ids), SHARD_GROUP_ROWS)]
    assert shard_groups(tmp_path / name) == bounds
    assert read_shard(tmp_path / name) == c
    first = (tmp_path / name).read_bytes()
    (tmp_path / name).unlink()
    write_shard(tmp_path, c)
    assert (tmp_path / name).read_bytes() == first  # the same bytes


def test_reading_some_crops_reads_their_groups_only(tmp_path, groups_read):
    c = crops(3 * SHARD_GROUP_ROWS)
    ids = sorted(c)
    name = write_shard(tmp_path, c)
    want = [ids[SHARD_GROUP_ROWS + 5], ids[SHARD_GROUP_ROWS + 9], "f" * 64]  # the last is in no group
    assert read_shard(tmp_path / name, want) == {i: c[i] for i in want[:2]}
    assert groups_read == [1]
    assert read_shard(tmp_path / name, ["0" * 64]) == {}  # before the first crop: no group read at all
    assert groups_read == [1]
    assert read_shard(tmp_path / name) == c and groups_read == [1, 0, 1, 2]  # the whole shard: a group at a time


def test_crop_reader_holds_a_few_groups_whatever_the_shard_size(tmp_path, groups_read):
    c = crops(5 * SHARD_GROUP_ROWS)
    name = write_shard(tmp_path, c)
    reader = CropReader(faces_table({name: c}), tmp_path, cache_groups=1)
    for fid in sorted(c):  # (shard, face_id) order: each group read once
        assert reader.read(fid) == c[fid]
        assert sum(len(v) for v in reader._cache.values()) <= SHARD_GROUP_ROWS
    assert groups_read == list(range(5))
    with pytest.raises(KeyError):
        reader.read("0" * 64)  # not a face of the table


@pytest.mark.parametrize("statistics", [True, False])
def test_a_shard_of_one_group_from_before_reads_as_before(tmp_path, statistics):
    c = crops(300)
    ids = sorted(c)
    name = "shard-old.parquet"
    with atomic_open(tmp_path / name, "wb") as f:  # as write_shard wrote them before the row groups
        pq.write_table(pa.table({"face_id": ids, "png": [c[i] for i in ids]}, schema=CROPS_SCHEMA), f,
                       compression="none", write_statistics=statistics)
    assert shard_groups(tmp_path / name) == ([(ids[0], ids[-1])] if statistics else None)
    assert read_shard(tmp_path / name, ids[10:20]) == {i: c[i] for i in ids[10:20]}
    reader = CropReader(faces_table({name: c}), tmp_path)
    assert all(reader.read(i) == c[i] for i in ids)


def test_a_shard_that_is_no_parquet_is_one_clear_error(tmp_path):
    (tmp_path / "shard-bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="shard-bad.parquet is not a readable Parquet file"):
        read_shard(tmp_path / "shard-bad.parquet", ["a" * 64])


def test_the_tag_loader_holds_a_work_unit_of_crops_not_a_shard(tmp_path, monkeypatch):
    from tasks.taggers import loader

    c = crops(5 * SHARD_GROUP_ROWS)
    name = write_shard(tmp_path, c)
    held: list[int] = []
    real = loader.read_shard

    def spy(path, only=None):
        out = real(path, only)
        held.append(len(out))
        return out

    monkeypatch.setattr(loader, "read_shard", spy)
    seen = [fid for ids, _ in loader.crop_loader(faces_table({name: c}), str(tmp_path), lambda png: png, 64, 0)
            for fid in ids]
    assert sorted(seen) == sorted(c)
    assert held and max(held) <= loader.UNIT_FACES < len(c)  # a unit's crops at a time, never the shard's
