"""bench/scale.py --dask: detect and tag again on a real Dask cluster (a `dask scheduler` process and a
`dask worker` process with one single-threaded worker per core, on 127.0.0.1), against the same
stages' process-pool / local runs of the main pass. detect starts from an empty crops directory (its
incremental state would otherwise skip every image), as the main pass's did; tag has no state. The
outputs are the same bytes either way (tests/detect/test_detect_dask.py, tests/tag/test_tag_dask.py),
so the stages downstream stay up to date."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import yaml

log = logging.getLogger("bench.scale")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(p: subprocess.Popen | None) -> None:
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


@contextlib.contextmanager
def cluster(workers: int, cwd: Path, env: dict, logs: Path) -> Iterator[str]:
    """A scheduler and `workers` worker processes; yields the scheduler's address."""
    from distributed import Client

    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = worker = None
    with open(logs / "dask-scheduler.log", "wb") as slog, open(logs / "dask-worker.log", "wb") as wlog:
        try:
            scheduler = subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                          "--no-dashboard"], cwd=cwd, env=env, stdout=slog, stderr=subprocess.STDOUT)
            worker = subprocess.Popen(["dask", "worker", address, "--nworkers", str(workers), "--nthreads", "1",
                                       "--no-dashboard", "--local-directory", str(logs / "dask-space")],
                                      cwd=cwd, env=env, stdout=wlog, stderr=subprocess.STDOUT)
            t0 = time.perf_counter()
            with Client(address, timeout=120) as client:
                client.wait_for_workers(workers, timeout=300)
            log.info("dask cluster at %s: %d workers up in %.1f s", address, workers, time.perf_counter() - t0)
            yield address
        finally:
            _stop(worker)
            _stop(scheduler)


def dask_rows(project: Path, n: int, logs: Path, env: dict, workers: int,
              run_stage: Callable[..., dict]) -> dict:
    """detect and tag with runner dask on a fresh cluster: their rows (as run_stage measures them)."""
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    rows: dict = {"workers": workers}
    try:
        with cluster(workers, project, env, logs / "dask") as address:
            for section in ("detect", "tag"):
                params[section]["runner"], params[section]["dask_address"] = "dask", address
            params_path.write_text(yaml.safe_dump(params, sort_keys=False))
            shutil.rmtree(project / params["detect"]["out"]["crops"], ignore_errors=True)
            for stage in ("detect", "tag"):
                rows[stage] = run_stage(project, stage, n, logs / "dask", env, False)
    finally:
        params_path.write_text(original)
    return rows


def dask_lines(res: dict) -> str:
    """detect and tag: the main pass's runner against the Dask cluster's, ms per image and peak RSS."""
    d = res.get("dask")
    if not d:
        return ""
    lines = [f"\nN = {res['n']:,}: detect and tag on a Dask cluster ({d['workers']} worker processes) "
             "against the main pass"]
    for stage in ("detect", "tag"):
        a, b = res["stages"][stage], d[stage]
        lines.append(f"  {stage:<7} {a['wall_s'] / res['n'] * 1e3:8.1f} ms/img wall, {a['max_rss_mb']:7.0f} MB  |  "
                     f"dask {b['wall_s'] / res['n'] * 1e3:8.1f} ms/img wall, {b['max_rss_mb']:7.0f} MB "
                     "(the client's; the workers are not in its process tree)")
    return "\n".join(lines)
