"""The training-dataset export and the loader keep their per-face bookkeeping (ids, attributes,
split, offsets) columnar: Python's peak allocation (tracemalloc) for 4N faces against N, with crops
of ~70 bytes so that the crops themselves count for little. A Python str, list or dict per face
(~0.5-1 KB a face) would fail these bounds; numpy arrays and Arrow columns (not traced) pass."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from models.data import FaceData
from tasks.train.export import export_training_data
from tests.train.test_trainset_memory import export_inputs, peak_of

SMALL, LARGE = 1500, 6000


def test_export_and_loader_hold_no_python_object_per_face(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG")
    crop = buf.getvalue()
    export, load = {}, {}
    for n in (SMALL, LARGE):
        root = tmp_path / str(n)
        faces = export_inputs(n, root, crop)
        data = root / "train.parquet"

        def run_export(faces=faces, root=root, data=data):
            s = export_training_data(faces, root / "crops", root / "tags.parquet", data, 0.1)
            assert s.faces == n

        def run_loader(data=data):
            FaceData(data, 8, torch.device("cpu"), seed=0, batch=4, threads=1).close()

        run_export()  # imports and first-call caches before measuring
        run_loader()
        export[n], load[n] = peak_of(run_export), peak_of(run_loader)
    per_face = {k: (v[LARGE] - v[SMALL]) / (LARGE - SMALL) for k, v in (("export", export), ("loader", load))}
    assert per_face["export"] < 500 and per_face["loader"] < 300, per_face
