"""Training batches from the training dataset (tasks.artifacts.trainset: face_id, encoded crop,
attributes, split); only the `train` split is trained on. Batches are a pure function of (seed,
step, rank) plus the device generator (for flips), so a resumed run sees exactly the same data.

Decoded uint8 images are cached in memory (on the GPU when training there) when they fit in
`cache_gb`, decoded one Parquet row group at a time straight into the cache (the encoded crops are
never all in memory, the decoded ones never twice); otherwise the encoded crops are held as the
Arrow column (no Python object per crop) and batches are decoded by a thread pool a few steps ahead
(streaming). Tags are held as int8 and bool, a batch's made float."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from tasks.artifacts.trainset import TRAIN, ExportFile, decode

log = logging.getLogger(__name__)

PREFETCH = 4


class FaceData:
    """Batches of (images in [-1, 1] (b,3,s,s), tags 0/1 (b,T), known 0/1 (b,T)) on `device`."""

    def __init__(self, path, image_size: int, device: torch.device, *, seed: int, batch: int, rank: int = 0,
                 world: int = 1, cache_gb: float = 8.0, threads: int = 4, channels_last: bool = False):
        ds = ExportFile(path)
        self.fingerprint, self.tagger, self.tagger_reason = ds.fingerprint, ds.tagger, ds.tagger_reason
        rows = np.flatnonzero(ds.split == TRAIN)
        self.attributes = ds.attributes[rows]
        self.n, self.n_holdout = len(rows), len(ds) - len(rows)
        if self.n == 0:
            raise ValueError(f"{path}: the training dataset holds no faces in its train split")
        self.size, self.device, self.seed = image_size, device, seed
        self.batch, self.rank, self.world = batch, rank, world
        self.local = batch // world
        self.channels_last = channels_last
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="faces")
        attrs = torch.from_numpy(self.attributes)  # int8, -1 unknown; a batch's rows become float in batch_at
        self.tags = attrs.clamp_min(0).to(device)  # 0/1
        self.known = (attrs >= 0).to(device)  # bool
        nbytes = self.n * 3 * image_size * image_size
        self.cached = nbytes <= cache_gb * 2**30
        self._perms: dict[int, torch.Tensor] = {}
        self._ahead: dict[int, object] = {}
        if self.cached:
            self.images = torch.empty((self.n, 3, image_size, image_size), dtype=torch.uint8, device=device)
            at = 0  # one row group's crops decoded at a time, straight into the cache (no second copy)
            for group in ds.iter_decoded(rows, image_size, threads):
                self.images[at:at + len(group)] = torch.from_numpy(group).permute(0, 3, 1, 2).to(device)
                at += len(group)
            self._pngs = None
        else:
            self._pngs = ds.crops().take(rows)  # the encoded crops in Arrow buffers
        log.info("data: %d faces (%d more held out), %s (%.2f GB decoded)", self.n, self.n_holdout,
                 "cached in memory" if self.cached else "streaming", nbytes / 2**30)

    # -- the index plan: epoch e is randperm(n) seeded by (seed, e); step s takes a contiguous slice
    def _perm(self, epoch: int, device) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed * 1_000_003 + epoch)
            if len(self._perms) > 3:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = torch.randperm(self.n, generator=g, device=device)
        return self._perms[epoch]

    def indices(self, step: int, device) -> torch.Tensor:
        first = step * self.batch + self.rank * self.local
        e0, e1 = first // self.n, (first + self.local - 1) // self.n
        perm = torch.cat([self._perm(e, device) for e in range(e0, e1 + 1)])
        return perm[first - e0 * self.n: first - e0 * self.n + self.local]

    def _decode_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices(step, "cpu")
        arr = np.stack([decode(self._pngs[i], self.size) for i in idx.tolist()])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
        return (x.pin_memory() if self.device.type == "cuda" else x), idx

    def batch_at(self, step: int, generator: torch.Generator):
        if self.cached:
            idx = self.indices(step, self.device)
            x = self.images[idx]
        else:
            for s in range(step, step + PREFETCH):
                if s not in self._ahead:
                    self._ahead[s] = self.pool.submit(self._decode_batch, s)
            for s in [s for s in self._ahead if s < step]:
                self._ahead.pop(s).cancel()
            xc, idx = self._ahead.pop(step).result()
            x, idx = xc.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True)
        flip = torch.rand(x.shape[0], device=self.device, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        x = x.float().div_(127.5).sub_(1.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.tags[idx].float(), self.known[idx].float()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
