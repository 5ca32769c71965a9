"""Fan the per-image work out: in this process (1 worker), over a process pool, or on a
Dask cluster. Every runner calls the same `work.process_image` and keeps only a bounded
window of images in flight, yielding results as they finish (order not guaranteed)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator, Optional

import cv2

from tasks.detect.work import ImageResult, ImageTask, WorkSettings, init_worker, process_image

log = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 4
MAX_CRASHES_PER_IMAGE = 2


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_local(tasks: Iterable[ImageTask], settings: WorkSettings) -> Iterator[ImageResult]:
    threads = cv2.getNumThreads()
    init_worker(settings)
    try:
        for task in tasks:
            yield process_image(task, settings)
    finally:
        cv2.setNumThreads(threads)


def _crashed(task: ImageTask) -> ImageResult:
    return ImageResult(task.image_id, "bad", "worker_crashed", "the worker process died on this image twice")


def run_pool(tasks: Iterable[ImageTask], settings: WorkSettings, workers: int) -> Iterator[ImageResult]:
    """A spawn-context process pool (safe beside Prefect's threads). A worker that dies
    (a segfault in a native decoder or detector) breaks the pool: it is restarted and the
    images that were in flight are retried, up to MAX_CRASHES_PER_IMAGE times."""
    ctx = multiprocessing.get_context("spawn")
    it = iter(tasks)
    retry: list[ImageTask] = []
    crashes: dict[str, int] = {}
    window = workers * IN_FLIGHT_PER_WORKER
    while True:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker, initargs=(settings,))
        pending: dict[Future, ImageTask] = {}
        broken = False
        try:
            while True:
                while len(pending) < window:
                    task = retry.pop() if retry else next(it, None)
                    if task is None:
                        break
                    pending[pool.submit(process_image, task, settings)] = task
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = pending.pop(fut)
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        broken = True
                        pending[fut] = task  # handled below with the rest in flight
                if broken:
                    break
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)
        log.warning("a detect worker process died; restarting the pool and retrying %d images", len(pending))
        for task in pending.values():
            crashes[task.image_id] = crashes.get(task.image_id, 0) + 1
            if crashes[task.image_id] >= MAX_CRASHES_PER_IMAGE:
                yield _crashed(task)
            else:
                retry.append(task)


def run_dask(tasks: Iterable[ImageTask], settings: WorkSettings, address: Optional[str],
             workers: int) -> Iterator[ImageResult]:
    """The same work on a Dask cluster: the scheduler at `address`, or a local cluster of
    `workers` single-threaded processes. Images must be readable at the same path there."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster if cluster is not None else address)
    try:
        nthreads = max(1, sum(client.nthreads().values()))
        window = nthreads * IN_FLIGHT_PER_WORKER
        client.run(init_worker, settings)  # one OpenCV thread per worker process
        shared = client.scatter(settings, broadcast=True)
        it = iter(tasks)
        ac = as_completed()
        for task in (t for _, t in zip(range(window), it)):
            ac.add(client.submit(process_image, task, shared, pure=False))
        for fut in ac:
            yield fut.result()
            fut.release()
            task = next(it, None)
            if task is not None:
                ac.add(client.submit(process_image, task, shared, pure=False))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def iter_results(tasks: Iterable[ImageTask], settings: WorkSettings, runner: str = "processes",
                 workers: Optional[int] = None, address: Optional[str] = None) -> Iterator[ImageResult]:
    n = workers or default_workers()
    if runner == "dask":
        return run_dask(tasks, settings, address, n)
    if n == 1:
        return run_local(tasks, settings)
    return run_pool(tasks, settings, n)
