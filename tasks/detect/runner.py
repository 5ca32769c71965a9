"""Fan the per-image work out: in this process (1 worker), over a process pool, or on a
Dask cluster. Every runner calls the same `work.process_image`, keeps a bounded window of
images in flight, and yields the results **in task order**, whatever order the workers
finish in: what the stage writes then never depends on scheduling.

A worker process that dies (a segfault in a native decoder or detector) is blamed only on
the image that really kills it: the images that were in flight with it are retried one at a
time, each alone in the pool, and only one that kills the worker alone is recorded
`worker_crashed` (a transient outcome: the next run tries it again)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, Optional

import cv2

from tasks.detect.work import ImageResult, ImageTask, WorkSettings, init_worker, process_image

log = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 4
Work = Callable[[ImageTask, WorkSettings], ImageResult]


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_local(tasks: Iterable[ImageTask], settings: WorkSettings, work: Work = process_image) -> Iterator[ImageResult]:
    threads = cv2.getNumThreads()
    init_worker(settings)
    try:
        for task in tasks:
            yield work(task, settings)
    finally:
        cv2.setNumThreads(threads)


def crashed(task: ImageTask) -> ImageResult:
    return ImageResult(task.image_id, "bad", "worker_crashed",
                       "the worker process died on this image alone (retried by the next run)")


class _Pool:
    """A spawn-context process pool (safe beside Prefect's threads) that is rebuilt after a crash."""

    def __init__(self, settings: WorkSettings, workers: int, work: Work):
        self.settings, self.workers, self.work = settings, workers, work
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: Optional[ProcessPoolExecutor] = None

    def submit(self, task: ImageTask) -> Future:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=self._ctx,
                                             initializer=init_worker, initargs=(self.settings,))
        return self._pool.submit(self.work, task, self.settings)

    def discard(self) -> None:
        """Drop a broken pool (its processes are gone or going)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def alone(self, task: ImageTask) -> ImageResult:
        """Run one image with nothing else in flight: a crash now is this image's."""
        try:
            return self.submit(task).result()
        except BrokenProcessPool:
            self.discard()
            log.warning("detect: image %s kills the worker process by itself: recorded worker_crashed", task.image_id)
            return crashed(task)


def _settle(window: deque[tuple[ImageTask, Future]], pool: _Pool) -> list[ImageResult]:
    """After the pool broke: keep the results that finished, rerun the rest one by one, in order."""
    wait([f for _, f in window])
    suspects = [t for t, f in window if f.exception() is not None]
    pool.discard()
    log.warning("detect: a worker process died with %d images in flight; retrying them one at a time", len(suspects))
    out = []
    for task, fut in window:
        out.append(pool.alone(task) if fut.exception() is not None else fut.result())
    return out


def run_pool(tasks: Iterable[ImageTask], settings: WorkSettings, workers: int,
             work: Work = process_image) -> Iterator[ImageResult]:
    """The images over `workers` processes, `IN_FLIGHT_PER_WORKER` each in flight, results in task order."""
    pool = _Pool(settings, workers, work)
    it = iter(tasks)
    size = workers * IN_FLIGHT_PER_WORKER
    window: deque[tuple[ImageTask, Future]] = deque()
    try:
        while True:
            while len(window) < size and (task := next(it, None)) is not None:
                window.append((task, pool.submit(task)))
            if not window:
                return
            task, fut = window[0]
            try:
                res = fut.result()
            except BrokenProcessPool:
                results = _settle(window, pool)
                window.clear()
                yield from results
                continue
            window.popleft()
            yield res
    finally:
        pool.close()


def run_dask(tasks: Iterable[ImageTask], settings: WorkSettings, address: Optional[str],
             workers: int, work: Work = process_image) -> Iterator[ImageResult]:
    """The same work on a Dask cluster: the scheduler at `address`, or a local cluster of
    `workers` single-threaded processes. Images must be readable at the same path there.
    Dask retries a task whose worker died on another worker; one that kills workers
    `distributed.scheduler.allowed-failures` times over is recorded `worker_crashed`."""
    from distributed import Client, KilledWorker, LocalCluster

    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster if cluster is not None else address)
    try:
        nthreads = max(1, sum(client.nthreads().values()))
        size = nthreads * IN_FLIGHT_PER_WORKER
        client.run(init_worker, settings)  # one OpenCV thread per worker process
        shared = client.scatter(settings, broadcast=True)
        it = iter(tasks)
        window: deque = deque()
        while True:
            while len(window) < size and (task := next(it, None)) is not None:
                window.append((task, client.submit(work, task, shared, pure=False)))
            if not window:
                return
            task, fut = window.popleft()
            try:
                res = fut.result()
            except KilledWorker:
                log.warning("detect: image %s killed Dask workers repeatedly: recorded worker_crashed", task.image_id)
                res = crashed(task)
            fut.release()
            yield res
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def iter_results(tasks: Iterable[ImageTask], settings: WorkSettings, runner: str = "processes",
                 workers: Optional[int] = None, address: Optional[str] = None,
                 work: Work = process_image) -> Iterator[ImageResult]:
    """Results in task order. `work` replaces the per-image function (it must be importable by
    name where it runs: a spawned process, a Dask worker)."""
    n = workers or default_workers()
    if runner == "dask":
        return run_dask(tasks, settings, address, n, work)
    if n == 1:
        return run_local(tasks, settings, work)
    return run_pool(tasks, settings, n, work)
