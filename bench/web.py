"""Benchmark the in-browser generator in headless Chromium against onnxruntime in Python, in the same run.

    python bench/web.py [--generator data/train/generator.safetensors] [--sizes 32,128] [--variant fp16]
                        [--runs 20] [--warmup 3] [--threads 1,0] [--batch 6] [--compare-tail]

Exports the generator like the export stage does (default: randomly initialised generators, the
same computation as trained ones, of the demo's size, params.yaml train.model, 32 px, and of the
paper's, 128 px; --generator: that file instead), builds the page, serves it
with COOP/COEP, and for each WASM thread count (0 = the page's default) opens it in a fresh
headless Chromium: time to first image (navigation start -> first image on the canvas: runtime
download + compile, model download, session, first run), then ms per image after warm-up
(inference + drawing, median). Baseline: Python onnxruntime (CPU) on the same .onnx file.
Goals: < 200 ms per image, < 2.5 s to the first image. Results also go to bench/out/web.json."""

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
GOAL_FIRST_MS = 2500.0  # navigation start -> first image
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


def generators(root: Path, sizes: list[int], given: str | None) -> dict[str, Path]:
    """name -> generator file: the given one, or random ones of the demo's (params.yaml) and the paper's size."""
    if given:
        return {"given": Path(given)}
    from tasks.params import load_section
    from tasks.params.train import RunConfig
    from tasks.typed import to_dict

    demo = to_dict(load_section("train", RunConfig).model)
    paper = dict(image_size=128, g_channels=64, g_blocks=16, d_channels=(32, 64, 128, 256, 512, 1024))
    out = {}
    for size in sizes:
        model = paper if size == 128 else {**demo, "d_channels": tuple(demo["d_channels"])} if size == demo[
            "image_size"] else None
        if model is None:
            raise SystemExit(f"error: --sizes: {size} is neither the demo's ({demo['image_size']}) nor the paper's (128)")
        out[f"{size}px"] = make_generator_file(root / f"{size}/generator.safetensors", **{**model, "image_size": size})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", help="generator.safetensors to measure (default: random ones, --sizes)")
    ap.add_argument("--sizes", default="32,128", help="random generators of these sizes: the demo's (32) and the paper's (128)")
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
        dist = build_page(root / "dist")
        results = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "load_avg": os.getloadavg()[0],
                   "goal_ms": GOAL_MS, "goal_first_image_ms": GOAL_FIRST_MS, "models": {}, "runs": {}}
        for gname, src in generators(root, [int(x) for x in args.sizes.split(",")], args.generator).items():
            models = {"fast_tail": export_config(root / gname / "fast", variant=args.variant)}
            if args.compare_tail:
                models["plain_tail"] = export_config(root / gname / "plain", variant=args.variant, fast_tail=False)
            for name, cfg in models.items():
                rep = run_export(cfg, src)
                web = Path(cfg.out.web)
                results["models"].setdefault(gname, {k: rep[k] for k in ("image_size", "parameters", "variant",
                                                                          "fp32_mb", "web_mb")})
                py1, pyn = (python_ms(web, t, args.runs, args.warmup) for t in (1, 0))
                server, url = serve_in_thread(dist, mounts={"/model/": web.parent})
                try:
                    for threads in (int(x) for x in args.threads.split(",")):
                        b = browser(url, threads, args.runs, args.warmup, args.batch)
                        b.update(python_1thread_ms=py1, python_allthreads_ms=pyn,
                                 ratio_vs_python_1thread=b["ms_per_image"] / py1)
                        results["runs"][f"{gname} {name}/threads={b['threads']}"] = b
                finally:
                    server.shutdown()
                    server.server_close()
    print(f"web generator, {results['date']}, {results['cpus']} CPUs (load {results['load_avg']:.1f})")
    for gname, m in results["models"].items():
        print(f"  {gname}: {m['image_size']}x{m['image_size']}, {m['parameters'] / 1e6:.2f} M parameters, "
              f"{m['web_mb']:.2f} MB {m['variant']} (fp32 {m['fp32_mb']:.2f} MB)")
    print(f"{'model export / WASM threads':34} {'ms/image':>9} {f'batch {args.batch}':>9} {'first image':>12} "
          f"{'python 1 thr':>13} {'ratio':>6}  goals < {GOAL_MS:.0f} ms, < {GOAL_FIRST_MS / 1000:.1f} s")
    for name, b in results["runs"].items():
        bb = b.get(f"ms_per_image_batch{args.batch}")
        met = b["ms_per_image"] < GOAL_MS and b["first_image_ms"] < GOAL_FIRST_MS
        print(f"{name:34} {b['ms_per_image']:9.1f} {'' if bb is None else f'{bb:9.1f}'} {b['first_image_ms']:10.0f} ms "
              f"{b['python_1thread_ms']:10.1f} ms {b['ratio_vs_python_1thread']:6.1f}  {'met' if met else 'missed'}")
    out = ROOT / "bench/out/web.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
