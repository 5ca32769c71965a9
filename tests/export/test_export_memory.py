"""The export stage reads the training dataset's tags without its crops: what it tells the page
(tasks.export.honesty.training_tags) costs Arrow memory for the ids, tags and split, not for the
encoded crops, whatever the dataset's size (at 16 k images the stage's peak was 1.9 GB: the whole
dataset read to count tags)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from tasks.artifacts.trainset import split_of, write_dataset
from tests.conftest import ROOT
from tests.support.train import random_attributes

FACES = 600
MB = 1 << 20


def test_training_tags_reads_no_crops(tmp_path):
    rng = np.random.default_rng(0)
    crops = []
    for _ in range(8):  # noise does not compress: ~48 KB a crop, 28 MB over the dataset
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, "PNG")
        crops.append(buf.getvalue())
    ids = [f"{i:06d}-face" for i in range(FACES)]
    path = tmp_path / "train.parquet"
    write_dataset(path, ids, [crops[i % 8] for i in range(FACES)], random_attributes(FACES).tolist(),
                  [split_of(f, 0.05) for f in ids])
    crop_bytes = sum(len(crops[i % 8]) for i in range(FACES))
    assert crop_bytes > 20 * MB
    r = subprocess.run([sys.executable, "-m", "tests.support.arrow_peak", str(path)], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert 0 < out["faces"] < FACES
    assert out["max_memory"] - out["before"] < crop_bytes / 10, (out, crop_bytes)
