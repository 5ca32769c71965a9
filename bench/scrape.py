"""Benchmark the scrape stage against a bare concurrent download loop, in the same run.

    python bench/scrape.py [--rounds 5] [--copies 10] [--rate 20] [--latency 0.02]

1. No rate limit: images/s of the stage (robots, listing, full Pillow decode in a process
   pool, content-addressed store, journal, manifest) vs requests + a thread pool of the same
   concurrency that only writes the bytes to disk. Every download has bytes of its own (each
   copy of the 46 illustrations carries a different comment), so every one is decoded. Then
   the same with the copies byte-identical, as this benchmark measured before: the stage then
   decodes 46 of them and stores the rest as duplicates.
   Rounds interleave (bare, stage, stage, bare, ...); the ratio is the median of the rounds'.
   Goal: ratio >= 0.8.
2. With a rate limit R: the achieved request rate, as the server saw it, median of rounds.
   Goal: >= 0.95 R and never above R.

The server runs in another process, as a remote site would, so it does not share our GIL.
On a loopback with no latency the bare loop keeps two cores busy by itself (client and
server), so whatever CPU the stage adds shows in full; `--latency S` makes each file take S
seconds to start arriving, as from a real CDN, which leaves the CPU time to overlap."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.scrape.run import scrape  # noqa: E402
from tasks.scrape.validate import validate_image  # noqa: E402
from tests.support.fakebooru import REAL, FakeBooru  # noqa: E402
from tests.support.scrape import scrape_cfg  # noqa: E402


def serve(copies: int, distinct: bool = True, latency: float = 0.0) -> FakeBooru:
    srv = FakeBooru(latency=latency)
    names = list(srv.files)
    for c in range(copies):  # under other URLs, with other bytes (distinct) or the same
        served = [f"c{c}_{n}" for n in names]
        for s, n in zip(served, names):
            if distinct:
                srv.add_variant(s, n, f"moeflow bench copy {c}")
            else:
                srv.alias(s, n)
        srv.add_real_posts(names, start_id=100000 - c * 1000)
        for post, s in zip(srv.posts[-len(names):], served):
            post["file"] = f"data/{s}"
    return srv


def _serve_in_child(copies: int, distinct: bool, latency: float, q, stop) -> None:
    with serve(copies, distinct, latency) as srv:
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


def stage(url: str, n: int, distinct: bool, concurrency: int, out: Path) -> float:
    cfg = scrape_cfg(out, url, http={"rate_limit": 0, "concurrency": concurrency}, posts_per_page=200)
    t0 = time.perf_counter()
    s = scrape(cfg, progress=False)
    seconds = time.perf_counter() - t0
    assert s.kept_new + s.duplicate == n and (s.duplicate == 0 or not distinct), s.lines()
    return seconds


def throughput(args, distinct: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_serve_in_child, args=(args.copies, distinct, args.latency, q, stop), daemon=True)
    child.start()
    url, urls = q.get(timeout=120)
    n = len(urls)
    import pandas  # noqa: F401 - pyarrow imports it on first use; keep one-off import time out of the figure
    bare, staged = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                order = ("bare", "stage") if r % 2 == 0 else ("stage", "bare")
                for what in order:
                    out = Path(tmp) / f"{what}{r}"
                    out.mkdir()
                    if what == "bare":
                        bare.append(bare_loop(urls, args.concurrency, out))
                    else:
                        staged.append(stage(url, n, distinct, args.concurrency, out))
    finally:
        stop.set()
        child.join(10)
    ratios = [b / s for b, s in zip(bare, staged)]
    what = "each with bytes of its own" if distinct else f"{n // args.copies} distinct, the rest byte-identical copies"
    print(f"\nimages: {n} per round, {what}; concurrency {args.concurrency}; {args.rounds} rounds "
          f"interleaved; server in another process, latency {args.latency:g}s; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    print(f"bare loop: {n / statistics.median(bare):8.1f} img/s median  (requests + thread pool, bytes to disk)")
    print(f"stage:     {n / statistics.median(staged):8.1f} img/s median  (robots, listing, full Pillow decode in a "
          "process pool, store, journal, manifest)")
    print(f"ratio stage/bare: median {statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
          "  (goal >= 0.8)")


def decode_cost() -> None:
    files = list(REAL.iterdir())
    cfg = scrape_cfg(Path(tempfile.gettempdir()), "http://127.0.0.1")
    t0 = time.process_time()
    for p in files:
        validate_image(str(p), cfg.filters)
    decode_ms = (time.process_time() - t0) / len(files) * 1000
    print(f"\nfull Pillow decode alone: {decode_ms:.1f} ms/img of CPU; with {os.cpu_count()} cores the decodes alone "
          f"need {decode_ms / os.cpu_count():.1f} ms/img of wall time at best, whatever overlaps them")


def rate_limited(args) -> None:
    achieved, worst = [], 0
    for _ in range(args.rate_rounds):
        with serve(1) as srv, tempfile.TemporaryDirectory() as tmp:
            srv.log.clear()
            cfg = scrape_cfg(Path(tmp), srv.url, http={"rate_limit": args.rate, "concurrency": args.concurrency},
                             posts_per_page=100, filters={"max_images": 60})
            scrape(cfg, progress=False)
            times = sorted(t for t, _, _ in srv.log)
            achieved.append((len(times) - 1) / (times[-1] - times[0]))
            worst = max(worst, max(sum(1 for u in times if t <= u < t + 1.0) for t in times))
    med = statistics.median(achieved)
    print(f"\nrate limit {args.rate:g}/s: achieved {med:.2f}/s median of {args.rate_rounds} rounds "
          f"(lowest {min(achieved):.2f}, highest {max(achieved):.2f}) = {med / args.rate:.3f} of the limit "
          f"(goal >= 0.95, <= 1.0); busiest 1 s window over all rounds: {worst} requests")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of bare loop and stage")
    ap.add_argument("--copies", type=int, default=10, help="copies of the 46 illustrations per round")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--rate-rounds", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds each file takes to start arriving")
    args = ap.parse_args()
    throughput(args, distinct=True)
    throughput(args, distinct=False)
    decode_cost()
    rate_limited(args)


if __name__ == "__main__":
    main()
