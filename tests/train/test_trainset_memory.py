"""The training dataset's writer (the train stage's export) and readers (the loader, render's
ExportFile) hold a bounded number of crops, whatever the dataset's size: Python's peak allocation
(tracemalloc) while exporting / loading 4N faces is compared with N faces. The crops are ~6 KB
each, so holding all of them would add far more than the per-face bookkeeping (ids, tags)."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from models.data import FaceData
from tasks.artifacts.faces import ShardWriter, read_faces, write_faces
from tasks.artifacts.tags import MGM_TAGS, tags_schema
from tasks.artifacts.trainset import (
    ROWS_PER_GROUP,
    TRAIN,
    ExportFile,
    export_schema,
    read_export,
    split_of,
    write_dataset,
)
from tasks.fileio import write_parquet
from tasks.train.export import export_training_data
from tests.support.train import random_attributes

SMALL, LARGE = 1500, 6000


@pytest.fixture(scope="module")
def crop() -> bytes:
    """A 40-px noise PNG (~5 KB: noise does not compress)."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def face_rows(n: int, crops: Path, png: bytes) -> tuple[list[dict], list[dict]]:
    writer = ShardWriter(crops, "m", rows_per_shard=256)
    rows, tag_rows = [], []
    attrs = random_attributes(n)
    for i in range(n):
        fid = f"{i * 7919 % n:06d}-face"  # face_id order is not shard order
        rows.append({"face_id": fid, "image_id": f"img{i}", "detector": "test", "score": 1.0, "box_x": 0,
                     "box_y": 0, "box_w": 40, "box_h": 40, "crop_x0": 0, "crop_y0": 0, "crop_x1": 40, "crop_y1": 40,
                     "size": 40, "monochrome": False, "duplicate_of": None, "drop_reason": None, "hair_rgb": None,
                     "eye_rgb": None, "skin_rgb": None, "shard": writer.add(fid, png), "params_key": "k"})
        tag_rows.append({"face_id": fid, "backend": "test", **{t: None for t in MGM_TAGS},
                         "attributes": attrs[i].tolist()})
    writer.flush()
    return rows, tag_rows


def export_inputs(n: int, root: Path, png: bytes) -> pa.Table:
    """The export's inputs for n faces under `root` (faces.parquet, tags.parquet, crops/): the faces."""
    rows, tag_rows = face_rows(n, root / "crops", png)
    write_faces(root / "faces.parquet", rows)
    write_parquet(root / "tags.parquet", tag_rows, tags_schema())
    return read_faces(root / "faces.parquet")


def peak_of(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_export_holds_one_row_group_of_crops_not_all(tmp_path, crop):
    peaks = {}
    for n in (SMALL, LARGE):
        root = tmp_path / str(n)
        faces = export_inputs(n, root, crop)
        out = root / "train.parquet"
        peaks[n] = peak_of(lambda: export_training_data(faces, root / "crops", root / "tags.parquet", out, 0.1))
        f = pq.ParquetFile(out)
        assert f.metadata.num_rows == n
        assert {f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups - 1)} == {ROWS_PER_GROUP}
        assert not [p for p in root.iterdir() if p.name.startswith(".")]  # the spool is gone
    added_crops = (LARGE - SMALL) * len(crop)
    assert peaks[LARGE] - peaks[SMALL] < 0.3 * added_crops, peaks


def test_writing_in_row_groups_gives_the_bytes_of_one_table(tmp_path, crop):
    """The streamed file is the file pyarrow writes from one table of every row."""
    n = 2 * ROWS_PER_GROUP + 5
    ids = [f"{i:05d}" for i in range(n)]
    attrs, splits = random_attributes(n).tolist(), [split_of(i, 0.2) for i in ids]
    fp = write_dataset(tmp_path / "a.parquet", ids, [crop] * n, attrs, splits, {"k": "v"})
    schema = export_schema(fp)
    schema = schema.with_metadata({**schema.metadata, b"k": b"v"})
    t = pa.table({"face_id": ids, "png": [crop] * n, "attributes": attrs, "split": splits}, schema=schema)
    with open(tmp_path / "b.parquet", "wb") as f, pq.ParquetWriter(f, schema, compression="none") as w:
        w.write_table(t, row_group_size=ROWS_PER_GROUP)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    e = read_export(tmp_path / "a.parquet")
    assert e.fingerprint == fp and len(e.pngs) == n and e.pngs[n - 1] == crop and e.pngs[-1] == crop
    held = e.take("holdout")
    assert len(held.pngs) == len(held.face_ids) == splits.count("holdout") and held.pngs[:2] == [crop, crop]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, crop) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("datasets")
    out = {}
    for n in (SMALL, LARGE):
        ids = [f"{i:06d}" for i in range(n)]
        out[n] = root / f"{n}.parquet"
        write_dataset(out[n], ids, [crop] * n, random_attributes(n).tolist(), [split_of(i, 0.1) for i in ids])
    return out


def test_the_loader_decodes_by_row_group_without_every_crop_in_memory(datasets, crop):
    peaks, data = {}, {}

    def load(n):
        data[n] = FaceData(datasets[n], 8, torch.device("cpu"), seed=0, batch=4, threads=1)
        data[n].close()

    for n in (SMALL, LARGE):
        peaks[n] = peak_of(lambda: load(n))
    assert data[LARGE].cached and data[LARGE].images.shape == (data[LARGE].n, 3, 8, 8)
    assert peaks[LARGE] - peaks[SMALL] < 0.3 * (LARGE - SMALL) * len(crop), peaks


def test_render_reads_only_the_rows_it_draws(datasets, crop):
    """ExportFile.decode of 100 rows, and iter_decoded of every train row: one row group at a time."""
    peaks = {}
    for n in (SMALL, LARGE):
        ds = ExportFile(datasets[n])
        rows = np.sort(np.random.default_rng(0).permutation(n)[:100])

        def draw(ds=ds, rows=rows):
            assert ds.decode(rows, 8).shape == (100, 8, 8, 3)
            assert sum(len(a) for a in ds.iter_decoded(np.flatnonzero(ds.split == TRAIN), 8)) == (ds.split == TRAIN).sum()

        peaks[n] = peak_of(draw)
    assert peaks[LARGE] < 1.3 * peaks[SMALL], peaks
    e = read_export(datasets[SMALL])
    want = np.asarray(Image.open(io.BytesIO(e.pngs[7])).convert("RGB").resize((8, 8), Image.BICUBIC))
    assert np.array_equal(ExportFile(datasets[SMALL]).decode([1200, 7], 8)[1], want)
