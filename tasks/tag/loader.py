"""Crops → decoded batches, in worker processes, with bounded memory.

Faces are grouped by crop shard and cut into work units of a few batches; worker k takes
units k, k+W, ... and keeps one shard in memory, so a shard is read at most W times and
at most `workers × prefetch` batches wait in memory. Decoding (PNG → RGB → resize) runs in
the workers; the network's float preprocessing runs on the device."""

from __future__ import annotations

import io
import os
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def decode_resize(png: bytes, size: int, pad_color: int | None = None, resample: str = "bilinear") -> torch.Tensor:
    """PNG bytes → uint8 (3, size, size) RGB; pad to a square of `pad_color` first when given."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    if pad_color is not None and im.width != im.height:
        side = max(im.size)
        canvas = Image.new("RGB", (side, side), (pad_color,) * 3)
        canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        im = canvas
    if im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC if resample == "bicubic" else Image.BILINEAR)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy())


def image_transform(size: int, pad_color: int | None = None, resample: str = "bilinear"):
    return partial(decode_resize, size=size, pad_color=pad_color, resample=resample)


def work_units(faces: pa.Table, unit: int) -> list[tuple[str, list[str]]]:
    """(shard, face ids) chunks, in (shard, face_id) order; faces without a stored crop are left out."""
    by_shard: dict[str, list[str]] = {}
    for fid, shard in zip(faces.column("face_id").to_pylist(), faces.column("shard").to_pylist()):
        if shard:
            by_shard.setdefault(shard, []).append(fid)
    units = []
    for shard in sorted(by_shard):
        ids = sorted(by_shard[shard])
        units += [(shard, ids[i:i + unit]) for i in range(0, len(ids), unit)]
    return units


def _read_shard(path: str) -> dict[str, bytes]:
    t = pq.read_table(path, columns=["face_id", "png"])
    return dict(zip(t.column("face_id").to_pylist(), t.column("png").to_pylist()))


class CropStream(IterableDataset):
    """Yields (face_id, transform(png)) for this worker's share of the work units."""

    def __init__(self, units: list[tuple[str, list[str]]], crops_dir: str, transform):
        self.units, self.crops_dir, self.transform = units, str(crops_dir), transform

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        name, shard = None, {}
        for k, (shard_name, ids) in enumerate(self.units):
            if k % nw != wid:
                continue
            if shard_name != name:
                shard, name = {}, None  # free the previous shard first
                shard, name = _read_shard(os.path.join(self.crops_dir, shard_name)), shard_name
            for fid in ids:
                yield fid, self.transform(shard[fid])


def collate(items):
    ids = [i for i, _ in items]
    values = [v for _, v in items]
    if values and all(isinstance(v, torch.Tensor) for v in values):
        return ids, torch.stack(values)
    return ids, values


def crop_loader(faces: pa.Table, crops_dir: str, transform, batch_size: int, workers: int, pin: bool = False) -> DataLoader:
    units = work_units(faces, max(batch_size, 64) * 2)
    # spawn, not fork: the parent holds Prefect's threads (API client, event loop), and a forked child
    # of a threaded process can die at start (seen: exit code 1 with no traceback under a flow run).
    return DataLoader(CropStream(units, crops_dir, transform), batch_size=batch_size, num_workers=workers,
                      collate_fn=collate, prefetch_factor=2 if workers else None, pin_memory=pin,
                      multiprocessing_context="spawn" if workers else None, persistent_workers=False)


def default_workers(device: str, workers: int | None) -> int:
    if workers is not None:
        return workers
    cores = os.cpu_count() or 1
    return min(8, cores) if device == "cuda" else 1
