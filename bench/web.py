"""Benchmark the in-browser generator in headless Chromium against onnxruntime in Python, in the same run.

    python bench/web.py [--generator data/train/generator.safetensors] [--variant fp16] [--runs 20]
                        [--warmup 3] [--threads 1,0] [--batch 6] [--compare-tail]

Exports the generator like the export stage does (default: a randomly initialised generator of
the paper's size, 128 px: the same computation as a trained one), builds the page, serves it
with COOP/COEP, and for each WASM thread count (0 = the page's default) opens it in a fresh
headless Chromium: time to first image (navigation start -> first image on the canvas: runtime
download + compile, model download, session, first run), then ms per image after warm-up
(inference + drawing, median). Baseline: Python onnxruntime (CPU) on the same .onnx file.
Goal: < 200 ms per image. Results also go to bench/out/web.json."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.export.parity import inputs_for, run_onnx, session  # noqa: E402
from tasks.export.run import run_export  # noqa: E402
from tasks.tools.webserve import serve_in_thread  # noqa: E402
from tests.support.export import export_config, make_generator_file  # noqa: E402
from tests.support.web import build_page, drive, ensure_browser  # noqa: E402

GOAL_MS = 200.0
TAGS = ["blonde_hair", "long_hair", "smile", "blush", "blue_eyes"]


def python_ms(model: Path, threads: int, runs: int, warmup: int, batch: int = 1) -> float:
    sess = session(model, threads=threads)
    z, t = inputs_for(list(range(batch)), [[0.0] * 34] * batch, 128)
    for _ in range(warmup):
        run_onnx(sess, z, t)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_onnx(sess, z, t)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times) / batch


def browser(url: str, threads: int, runs: int, warmup: int, batch: int) -> dict:
    q = "?ep=wasm" + (f"&threads={threads}" if threads else "")
    r = drive(url + q, seed=1, tags=TAGS, bench={"runs": runs, "warmup": warmup, "batch": 1}, timeout_s=600)
    out = {"first_image_ms": r["first"]["firstImageMs"], "load_ms": r["first"]["loadMs"],
           "ms_per_image": statistics.median(r["bench"]["times"]), "threads": r["bench"]["threads"],
           "isolated": r["bench"]["crossOriginIsolated"]}
    if batch > 1:
        rb = drive(url + q, bench={"runs": max(3, runs // 3), "warmup": 1, "batch": batch}, timeout_s=600)
        out[f"ms_per_image_batch{batch}"] = statistics.median(rb["bench"]["times"]) / batch
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", help="generator.safetensors (default: a random one of the paper's size)")
    ap.add_argument("--variant", default="fp16", choices=["none", "fp16", "int8"])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="1,0", help="WASM thread counts to measure; 0 = the page's default")
    ap.add_argument("--batch", type=int, default=6, help="also measure ms/image in batches of this (the variation strip)")
    ap.add_argument("--compare-tail", action="store_true", help="also measure an export without export.fast_tail")
    args = ap.parse_args(argv)
    ensure_browser()
    with tempfile.TemporaryDirectory(prefix="moeflow-bench-web-") as tmp:
        root = Path(tmp)
        src = Path(args.generator) if args.generator else make_generator_file(
            root / "generator.safetensors", image_size=128, g_channels=64, g_blocks=16,
            d_channels=(32, 64, 128, 256, 512, 1024))
        dist = build_page(root / "dist")
        models = {"fast_tail": export_config(root / "fast", variant=args.variant)}
        if args.compare_tail:
            models["plain_tail"] = export_config(root / "plain", variant=args.variant, fast_tail=False)
        results = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "load_avg": os.getloadavg()[0],
                   "goal_ms": GOAL_MS, "runs": {}}
        for name, cfg in models.items():
            rep = run_export(cfg, src)
            web = Path(cfg.out.web)
            results.setdefault("model", {k: rep[k] for k in ("image_size", "parameters", "variant", "fp32_mb", "web_mb")})
            py1, pyn = (python_ms(web, t, args.runs, args.warmup) for t in (1, 0))
            server, url = serve_in_thread(dist, mounts={"/model/": web.parent})
            try:
                for threads in (int(x) for x in args.threads.split(",")):
                    b = browser(url, threads, args.runs, args.warmup, args.batch)
                    b.update(python_1thread_ms=py1, python_allthreads_ms=pyn, ratio_vs_python_1thread=b["ms_per_image"] / py1)
                    results["runs"][f"{name}/threads={b['threads']}"] = b
            finally:
                server.shutdown()
                server.server_close()
    m = results["model"]
    print(f"web generator, {results['date']}, {results['cpus']} CPUs (load {results['load_avg']:.1f}); model "
          f"{m['image_size']}x{m['image_size']}, {m['parameters'] / 1e6:.2f} M parameters, {m['web_mb']:.1f} MB "
          f"{m['variant']} (fp32 {m['fp32_mb']:.1f} MB)")
    print(f"{'export / WASM threads':28} {'ms/image':>9} {f'batch {args.batch}':>9} {'first image':>12} "
          f"{'python 1 thr':>13} {'ratio':>6}  goal < {GOAL_MS:.0f} ms")
    for name, b in results["runs"].items():
        bb = b.get(f"ms_per_image_batch{args.batch}")
        print(f"{name:28} {b['ms_per_image']:9.1f} {bb if bb is None else f'{bb:9.1f}'} {b['first_image_ms']:10.0f} ms "
              f"{b['python_1thread_ms']:10.1f} ms {b['ratio_vs_python_1thread']:6.1f}  "
              f"{'met' if b['ms_per_image'] < GOAL_MS else 'missed'}")
    out = ROOT / "bench/out/web.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
