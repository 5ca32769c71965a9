"""Tiny training fixtures: faces from the real crops in ../shared/data/faces, random valid tags."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.artifacts.faces import ShardWriter, face_id, write_faces
from tasks.artifacts.tags import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, INDEPENDENT_SLICE, MGM_TAGS, tags_schema
from tasks.fileio import write_parquet
from tasks.params.train import LoopConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, RunOut

TINY_MODEL = ModelConfig(image_size=32, z_dim=16, g_channels=8, g_blocks=2, d_channels=(8, 16, 32), d_blocks=1)


def random_attributes(n: int, seed: int = 0, unknown: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros((n, len(MGM_TAGS)), np.int8)
    for sl in (HAIR_COLOR_SLICE, EYE_COLOR_SLICE):
        a[np.arange(n), sl.start + rng.integers(0, sl.stop - sl.start, n)] = 1
    ind = a[:, INDEPENDENT_SLICE]
    ind[:] = rng.random(ind.shape) < 0.3
    a[rng.random(a.shape) < unknown] = -1
    return a


def make_faces(shared: Path, root: Path, n: int = 48, seed: int = 0) -> dict:
    """faces.parquet + crop shards + tags.parquet under root, from n real crops."""
    files = sorted((shared / "data" / "faces").iterdir())
    files = files[:n // 2] + files[-(n - n // 2):]  # both afdr_* and dlgan_*
    writer = ShardWriter(root / "crops", "t", rows_per_shard=16)
    rows, tag_rows = [], []
    attrs = random_attributes(len(files), seed)
    for i, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        buf = io.BytesIO()
        im.save(buf, "PNG")
        fid = face_id(f.name, "test", (0, 0, im.width, im.height))
        shard = writer.add(fid, buf.getvalue())
        rows.append({"face_id": fid, "image_id": f.name, "detector": "test", "score": 1.0, "box_x": 0, "box_y": 0,
                     "box_w": im.width, "box_h": im.height, "crop_x0": 0, "crop_y0": 0, "crop_x1": im.width,
                     "crop_y1": im.height, "size": im.width, "monochrome": False, "duplicate_of": None,
                     "drop_reason": None, "hair_rgb": None, "eye_rgb": None, "skin_rgb": None, "shard": shard,
                     "params_key": "k"})
        tag_rows.append({"face_id": fid, "backend": "test", **{t: None for t in MGM_TAGS},
                         "attributes": attrs[i].tolist()})
    writer.flush()
    write_faces(root / "faces.parquet", rows)
    write_parquet(root / "tags.parquet", tag_rows, tags_schema())
    return {"faces": root / "faces.parquet", "crops": root / "crops", "tags": root / "tags.parquet"}


def tiny_run(data: Path, out: Path, steps: int = 6, **loop) -> RunConfig:
    kw = dict(steps=steps, seed=0, device="cpu", checkpoint_every=3, log_every=3, threads=1, progress=False,
              loader_threads=1)
    kw.update(loop)
    return RunConfig(out=RunOut(data=str(data), dir=str(out)), model=TINY_MODEL, loss=LossConfig(),
                     optim=OptimConfig(batch=8, ema_decay=0.9), loop=LoopConfig(**kw))
