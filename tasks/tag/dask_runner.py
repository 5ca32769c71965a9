"""`tag.runner: dask`: the tag stage's faces in chunks on a Dask cluster.

The driver cuts the reviewed faces into chunks made of the local runner's own batches
(tasks.taggers.loader.plan_batches: by crop shard, so a chunk reads the row groups of few shards; at most
CHUNK_FACES faces each), so every forward sees the batch it sees locally; it submits one task
per chunk with a bounded number in flight and hands the chunks' TagBatches to
`tasks.tag.run.tag_faces`, which writes tags.parquet in face_id order through the same writer:
the same rows and bytes as the local runner with the same `tag.threads`.

Each worker process builds the backend once (cached in `_CACHE`, keyed by a hash of the
config) and runs the same `backend.batches` as the local runner on its chunk, decoding crops
in-process (`workers: 0`; Dask's processes are the parallelism). The crops dir and the model
files must be readable on the workers at the same absolute paths (relative paths are resolved
against the driver's working directory), and the workers run the same moeflow checkout."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import DataError
from tasks.fileio import sha256_file
from tasks.params.tag import TagConfig
from tasks.taggers.backends import BACKENDS, COLUMNS, TagBatch
from tasks.taggers.loader import plan_batches
from tasks.typed import build, to_dict

log = logging.getLogger(__name__)

CHUNK_FACES = 1024  # upper bound on the faces of one task (rounded down to whole batches)
IN_FLIGHT_PER_THREAD = 2  # chunks submitted or waiting to be written, per worker thread
MAX_CACHED = 2  # backends kept per worker process (a long-lived cluster may see several configs)
_CACHE: dict[str, tuple[object, threading.Lock]] = {}
_CACHE_LOCK = threading.Lock()


@dataclass
class ChunkResult:
    batches: list[TagBatch]
    weights_sha256: str | None
    measured: int = 0
    unmeasured: int = 0
    devices: frozenset[str] = frozenset()


# --- the driver's side ----------------------------------------------------------------------------

def chunk_size(cfg: TagConfig, limit: int | None = None) -> int:
    """Faces per chunk: whole batches, at most `limit` (CHUNK_FACES) unless one batch is more."""
    return max(1, (CHUNK_FACES if limit is None else limit) // cfg.batch_size) * cfg.batch_size


def _chunks(n: int, batch: int, size: int, first_shards: list[str] | None = None) -> list[tuple[int, int]]:
    """Positions 0..n in batches of `batch`, consecutive batches grouped into chunks [lo, hi) of at most
    `size` positions (or one batch); with `first_shards` (the shard of each batch's first face), a
    chunk also ends before a batch that starts in another shard than the chunk did, so a worker reads
    few shards (a batch that straddles two reads both, as it does locally)."""
    out: list[tuple[int, int]] = []
    lo, shard_of_chunk = None, None
    for k, b in enumerate(range(0, n, batch)):
        shard = first_shards[k] if first_shards is not None else None
        if lo is not None and (min(b + batch, n) - lo > size or shard != shard_of_chunk):
            out.append((lo, b))
            lo = None
        if lo is None:
            lo, shard_of_chunk = b, shard
    return out + ([(lo, n)] if lo is not None else [])


def plan_chunks(faces: pa.Table, backend: str, cfg: TagConfig, size: int) -> list[pa.Table]:
    """The faces in chunks made of the local runner's own batches (so every forward a worker runs
    is one the local runner runs: the same numbers); faces without a stored crop are left out,
    as the local runner leaves them (the colour backend's faces with detector colours need none).
    Columnar: row indices in Arrow, Python objects a batch, not a face."""
    faces = faces.select([c for c in COLUMNS if c in faces.column_names])
    bs = cfg.batch_size

    def by_id(rows: pa.Array) -> pa.Array:
        return rows.take(pc.sort_indices(faces.column("face_id").take(rows)))

    def planned(rows: pa.Array) -> tuple[pa.Array, list[str]]:  # the local loader's batches (plan_batches)
        plan = plan_batches(faces.take(rows), bs)
        return rows.take(plan.rows), plan.first_shards()

    if backend == "color":  # detector colours: no crop read, any grouping gives the same rows
        has = pc.is_valid(faces.column("hair_rgb"))
        parts = [(by_id(pc.indices_nonzero(has)), None)]
        rest = pc.indices_nonzero(pc.invert(has))
        parts.append(planned(rest) if cfg.color.measure else (by_id(rest), None))
    else:
        parts = [planned(pa.array(range(faces.num_rows), pa.int64()))]
    return [faces.take(rows.slice(lo, hi - lo)) for rows, first in parts for lo, hi in _chunks(len(rows), bs, size, first)]


def worker_params(cfg: TagConfig) -> dict:
    """The config as sent to the workers: model paths made absolute (the driver's cwd)."""
    d = to_dict(cfg)
    for section, keys in (("i2v", ("weights", "tag_list", "feature_weights")), ("onnx", ("model", "tags_csv"))):
        for k in keys:
            d[section][k] = os.path.abspath(d[section][k])
    return d


def params_key(params: dict, backend: str) -> str:
    return hashlib.sha256(json.dumps([backend, params], sort_keys=True).encode()).hexdigest()


class DaskTagger:
    """Looks like a backend to `tag_faces`: weights_sha256, measured, devices, batches(faces, crops_dir)."""

    def __init__(self, cfg: TagConfig, backend: str, chunk_faces: int | None = None):
        self.cfg, self.name = cfg, backend
        self.size = chunk_size(cfg, chunk_faces)
        self.weights_sha256 = {"i2v": lambda: sha256_file(cfg.i2v.weights),
                               "onnx": lambda: sha256_file(cfg.onnx.model)}.get(backend, lambda: None)()
        self.measured = self.unmeasured = 0
        self.devices: set[str] = set()  # where the workers ran their forwards

    def _client(self):
        from distributed import Client, LocalCluster

        if self.cfg.dask_address is not None:
            return Client(self.cfg.dask_address), None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        n = self.cfg.workers or cores
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster

    def batches(self, faces: pa.Table, crops_dir: str) -> Iterator[TagBatch]:
        chunks = plan_chunks(faces, self.name, self.cfg, self.size)
        if not chunks:
            return
        from distributed import as_completed

        params = worker_params(self.cfg)
        key, crops = params_key(params, self.name), os.path.abspath(crops_dir)
        client, cluster = self._client()
        try:
            threads = max(1, sum(client.nthreads().values()))
            window = threads * IN_FLIGHT_PER_THREAD
            log.info("tag: %d faces in %d chunks on dask %s (%d worker threads, %d chunks in flight)",
                     sum(c.num_rows for c in chunks), len(chunks), self.cfg.dask_address or "local cluster",
                     threads, window)
            index: dict[str, int] = {}
            ready: dict[int, ChunkResult] = {}
            ac = as_completed()
            submitted = written = 0
            while written < len(chunks):
                while submitted < len(chunks) and submitted - written < window:  # bounds in flight + buffered
                    chunk, chunks[submitted] = chunks[submitted], None  # the driver keeps no copy
                    fut = client.submit(tag_chunk, params, key, self.name, chunk, crops, pure=False)
                    index[fut.key] = submitted
                    ac.add(fut)
                    submitted += 1
                while written not in ready:
                    fut = next(ac)
                    ready[index.pop(fut.key)] = fut.result()
                    fut.release()
                res = ready.pop(written)
                written += 1
                if res.weights_sha256 != self.weights_sha256:
                    raise DataError(f"tag: a dask worker loaded weights with sha256 {res.weights_sha256}, the driver "
                                    f"has {self.weights_sha256}: the workers must read the same model files")
                self.measured += res.measured
                self.unmeasured += res.unmeasured
                self.devices |= res.devices
                yield from res.batches
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


# --- the worker's side ----------------------------------------------------------------------------

def _worker_threads() -> int:
    try:
        from distributed import get_worker

        w = get_worker()
        return int(getattr(getattr(w, "state", w), "nthreads", 1)) or 1
    except (ImportError, ValueError, AttributeError):
        return 1


def worker_backend(params: dict, key: str, backend: str):
    """This process's backend for `params` (built on first use): crops decoded in-process,
    torch / onnxruntime threads = tag.threads, else the Dask worker's threads."""
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
        if entry is None:
            cfg = build(TagConfig, params, "tag")
            cfg = dataclasses.replace(cfg, workers=0, threads=cfg.threads or _worker_threads())
            log.info("tag: building the %s backend in this worker (threads %d)", backend, cfg.threads)
            entry = (BACKENDS[backend](cfg), threading.Lock())
            while len(_CACHE) >= MAX_CACHED:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = entry
    return entry


def tag_chunk(params: dict, key: str, backend: str, chunk: pa.Table, crops_dir: str) -> ChunkResult:
    """One task: the chunk's TagBatches, from the same `backend.batches` the local runner runs."""
    b, lock = worker_backend(params, key, backend)
    with lock:  # one chunk at a time per backend (its counters; the forward has the threads)
        m0, u0 = getattr(b, "measured", 0), getattr(b, "unmeasured", 0)
        batches = list(b.batches(chunk, crops_dir))
        return ChunkResult(batches, b.weights_sha256, getattr(b, "measured", 0) - m0, getattr(b, "unmeasured", 0) - u0,
                           frozenset(b.devices))
