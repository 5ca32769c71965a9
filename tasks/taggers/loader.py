"""Crops → decoded batches, in worker processes, with bounded memory.

The batches are planned once, in the driver, independently of the number of workers: faces in
(crop shard, face_id) order, cut into runs of `batch_size` (a batch may straddle two shards).
So every forward sees the same batch whatever `tag.workers` is (and the Dask runner runs these
very batches too). Consecutive batches are grouped into work units of at least UNIT_FACES
faces; worker k takes units k, k+W, ... and reads a unit's crops only (the row groups of its
shards that hold them: tasks.artifacts.faces.read_shard), so what a worker holds does not grow
with the shards' size, and at most `workers × prefetch` batches wait in memory. Decoding (PNG →
RGB → resize, or the colour measurement) runs in the workers; a network's float preprocessing
runs on the device. The order batches arrive in does not matter: tags.parquet is written in
face_id order (tasks.tag.run)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import partial
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from models.device import cores
from tasks.artifacts.faces import read_shard

UNIT_FACES = 128  # faces per work unit (whole batches): what one worker decodes before the next takes over
MIN_FACES_PER_WORKER = 1000  # tag.workers null: a measuring process per this many faces (its start, torch's import
# included, costs ~2 s idle and up to ~7 s on a loaded 2-core machine; one face costs ~14 ms)


def resize_image(im, size: int, pad_color: int | None = None, resample: str = "bilinear") -> torch.Tensor:
    """A PIL RGB image → uint8 (3, size, size); pad to a square of `pad_color` first when given."""
    from PIL import Image

    if pad_color is not None and im.width != im.height:
        side = max(im.size)
        canvas = Image.new("RGB", (side, side), (pad_color,) * 3)
        canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        im = canvas
    if im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC if resample == "bicubic" else Image.BILINEAR)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy())


def decode_resize(png: bytes, size: int, pad_color: int | None = None, resample: str = "bilinear") -> torch.Tensor:
    """PNG bytes → uint8 (3, size, size) RGB (see resize_image)."""
    from PIL import Image

    return resize_image(Image.open(io.BytesIO(png)).convert("RGB"), size, pad_color, resample)


def image_transform(size: int, pad_color: int | None = None, resample: str = "bilinear"):
    return partial(decode_resize, size=size, pad_color=pad_color, resample=resample)


Batch = list[tuple[str, str]]  # (shard, face_id) per face


@dataclass(frozen=True)
class Plan:
    """The faces with a stored crop in (shard, face_id) order, cut into batches of `batch_size` (the
    last one shorter): two Arrow arrays (the shard dictionary-encoded), so the plan costs ~70 bytes
    a face in the driver and in every worker it is sent to, not a Python tuple a face."""

    shard: pa.Array
    face_id: pa.Array
    batch_size: int
    rows: pa.Array  # each face's row in the table it was planned from (the Dask runner's chunks take them)

    def __len__(self) -> int:
        return -(-len(self.face_id) // self.batch_size)

    def batch(self, k: int) -> Batch:
        lo = k * self.batch_size
        n = min(self.batch_size, len(self.face_id) - lo)
        return list(zip(self.shard.slice(lo, n).cast(pa.string()).to_pylist(), self.face_id.slice(lo, n).to_pylist()))

    def __iter__(self) -> Iterator[Batch]:
        return (self.batch(k) for k in range(len(self)))

    def first_shards(self) -> list[str]:
        """The shard of each batch's first face."""
        return self.shard.take(pa.array(range(0, len(self.face_id), self.batch_size), pa.int64())).cast(pa.string()).to_pylist()


def plan_batches(faces: pa.Table, batch_size: int) -> Plan:
    """The faces with a stored crop in (shard, face_id) order, in batches of `batch_size`; faces
    without a stored crop (a null or empty shard) are left out."""
    at = pc.indices_nonzero(pc.fill_null(pc.not_equal(faces.column("shard"), ""), False))
    t = faces.select(["shard", "face_id"]).take(at)
    order = pc.sort_indices(t, sort_keys=[("shard", "ascending"), ("face_id", "ascending")])
    t = t.take(order)
    return Plan(pc.dictionary_encode(t.column("shard").combine_chunks()), t.column("face_id").combine_chunks(),
                batch_size, at.take(order))


def work_units(plan: Plan, unit_faces: int = UNIT_FACES) -> list[range]:
    """Consecutive batches (their indices) grouped into units of at least `unit_faces` faces (the last may be smaller)."""
    per_unit = max(1, -(-unit_faces // plan.batch_size))
    return [range(k, min(k + per_unit, len(plan))) for k in range(0, len(plan), per_unit)]


class CropStream(IterableDataset):
    """Yields (face ids, transformed crops) per planned batch, for this worker's share of the units;
    the transformed crops are stacked when they are tensors, a list otherwise."""

    def __init__(self, plan: Plan, units: list[range], crops_dir: str, transform):
        self.plan, self.units, self.crops_dir, self.transform = plan, units, str(crops_dir), transform

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        for k, unit in enumerate(self.units):
            if k % nw != wid:
                continue
            batches = [self.plan.batch(b) for b in unit]
            wanted: dict[str, list[str]] = {}
            for batch in batches:
                for shard, fid in batch:
                    wanted.setdefault(shard, []).append(fid)
            crops: dict[str, bytes] = {}  # this unit's crops only: the row groups that hold them
            for shard, fids in wanted.items():
                crops.update(read_shard(os.path.join(self.crops_dir, shard), fids))
            for batch in batches:
                values = [self.transform(crops[fid]) for _, fid in batch]
                ids = [fid for _, fid in batch]
                if values and all(isinstance(v, torch.Tensor) for v in values):
                    yield ids, torch.stack(values)
                else:
                    yield ids, values
            del crops


def _as_is(batch):
    return batch


def crop_loader(faces: pa.Table, crops_dir: str, transform, batch_size: int, workers: int, pin: bool = False) -> DataLoader:
    """Batches of (face ids, crops) in planned batches (see the module docstring), in any order."""
    plan = plan_batches(faces, batch_size)
    units = work_units(plan)
    workers = min(workers, len(units))
    # spawn, not fork: the parent holds Prefect's threads (API client, event loop), and a forked child
    # of a threaded process can die at start (seen: exit code 1 with no traceback under a flow run).
    return DataLoader(CropStream(plan, units, crops_dir, transform), batch_size=None, num_workers=workers,
                      collate_fn=_as_is, prefetch_factor=2 if workers else None, pin_memory=pin,
                      multiprocessing_context="spawn" if workers else None, persistent_workers=False)


def default_workers(device: str, workers: int | None, faces: int | None = None, kind: str = "decode") -> int:
    """tag.workers, or for null: on GPU min(8, cores) decoders; on CPU one decoder (the forward
    gets the cores), except for `kind="measure"` (the colour measurement, all CPU work in the
    workers): one process per core, at most one per MIN_FACES_PER_WORKER faces (0 = in-process)."""
    if workers is not None:
        return workers
    n = cores()
    if device == "cuda":
        return min(8, n)
    if kind == "measure":
        return min(n, (faces or 0) // MIN_FACES_PER_WORKER)
    return 1
