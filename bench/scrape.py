"""Benchmark the scrape stage against a bare concurrent download loop, in the same run.

    python bench/scrape.py [--rounds 3] [--rate 20]

1. No rate limit: images/s of the stage (listing, robots, validation, content-addressed
   store, journal, manifest) vs requests + a thread pool of the same concurrency that only
   writes the bytes to disk. Goal: ratio >= 0.8.
2. With a rate limit R: the achieved request rate, as the server saw it. Goal: >= 0.95 R
   and never above R."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.scrape.run import scrape  # noqa: E402
from tasks.scrape.store import validate_image  # noqa: E402
from tests.fakebooru import REAL, FakeBooru  # noqa: E402
from tests.scrape_helpers import scrape_cfg  # noqa: E402


def serve(rounds: int) -> FakeBooru:
    srv = FakeBooru()
    names = list(srv.files)
    for r in range(rounds):  # the same bytes under other URLs: every one is downloaded and validated
        aliases = []
        for n in names:
            srv.alias(f"r{r}_{n}", n)
            aliases.append(f"r{r}_{n}")
        srv.add_real_posts(aliases, start_id=100000 - r * 1000)
    return srv


def _serve_in_child(rounds: int, q, stop) -> None:
    with serve(rounds) as srv:
        q.put((srv.url, [f"{srv.url}/{p['file']}" for p in srv.posts]))
        stop.wait()


def bare_loop(urls: list[str], concurrency: int, out: Path) -> float:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency * 2)
    session.mount("http://", adapter)

    def get(i_url):
        i, url = i_url
        (out / f"{i}.bin").write_bytes(session.get(url, timeout=30).content)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(get, enumerate(urls)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rate", type=float, default=20.0)
    args = ap.parse_args()
    # The server runs in its own process, as a remote site would, so it does not share our GIL.
    ctx = multiprocessing.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_serve_in_child, args=(args.rounds, q, stop), daemon=True)
    child.start()
    url, urls = q.get(timeout=120)
    import pandas  # noqa: F401 - pyarrow imports it on first use; keep one-off import time out of the figure
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            n = len(urls)
            (tmp / "bare").mkdir()
            bare = bare_loop(urls, args.concurrency, tmp / "bare")
            cfg = scrape_cfg(tmp / "stage", url, http={"rate_limit": 0, "concurrency": args.concurrency},
                             posts_per_page=200)
            t0 = time.perf_counter()
            s = scrape(cfg, progress=False)
            stage = time.perf_counter() - t0
            assert s.kept_new + s.duplicate == n, s.lines()
    finally:
        stop.set()
        child.join(10)
    print(f"images: {n} ({s.kept_new} distinct), concurrency {args.concurrency}, server in another process")
    print(f"bare loop: {n / bare:8.1f} img/s  (requests + thread pool, bytes to disk)")
    print(f"stage:     {n / stage:8.1f} img/s  (listing, robots, full Pillow decode, store, journal, manifest)")
    print(f"ratio stage/bare: {bare / stage:.2f}  (goal >= 0.8)")
    files = [p for p in REAL.iterdir()]
    t0 = time.perf_counter()
    for p in files:
        validate_image(str(p), cfg.filters)
    decode_ms = (time.perf_counter() - t0) / len(files) * 1000
    print(f"full Pillow decode alone: {decode_ms:.1f} ms/img of CPU, vs {1000 * bare / n:.1f} ms/img wall for the "
          "whole bare loop: on a loopback server the decode, not the network, bounds the ratio")

    with serve(1) as srv, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        srv.log.clear()
        cfg = scrape_cfg(tmp / "limited", srv.url, http={"rate_limit": args.rate, "concurrency": args.concurrency},
                         posts_per_page=100, filters={"max_images": 60})
        scrape(cfg, progress=False)
        times = sorted(t for t, _, _ in srv.log)
        achieved = (len(times) - 1) / (times[-1] - times[0])
        worst = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
        print(f"rate limit {args.rate:.0f}/s: achieved {achieved:.2f}/s over {len(times)} requests "
              f"= {achieved / args.rate:.3f} of the limit (goal >= 0.95, <= 1.0); busiest 1 s window: {worst} requests")


if __name__ == "__main__":
    main()
