"""Benchmark: faces per second of the detect stage vs the upstream example's loop.

The upstream loop (nagadomi/lbpcascade_animeface README): per image imread, grey,
equalizeHist, detectMultiScale(1.1, 5, 24x24), crop, imwrite. The stage does more per
image (EXIF, transparency, 1.5x box, resize, PNG, pHash, Parquet) and is run as the plain
function `tasks.detect.run.detect` on a fresh output dir with 1 worker and with all cores.
Both process ../shared/data/real, `--repeat` times (as distinct image ids), and each
measurement is taken `--rounds` times, interleaved, keeping the best (the machine is shared).
The bare loop runs with one OpenCV thread (a one-core baseline); with OpenCV's default
threads it is reported too.

    .venv/bin/python bench/detect.py [--repeat 3] [--rounds 2]
Goals: 1 worker >= 0.9x the bare loop; all cores >= 0.85x cores x 1 worker."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

from tasks.artifacts.images import MANIFEST_SCHEMA  # noqa: E402
from tasks.detect.run import detect  # noqa: E402
from tasks.detect.runner import default_workers  # noqa: E402
from tasks.fileio import write_parquet  # noqa: E402
from tasks.params.detect import DetectConfig, DetectOut  # noqa: E402

SHARED = ROOT.parent / "shared"
REAL = SHARED / "data" / "real"
CASCADE = SHARED / "models" / "lbpcascade_animeface.xml"
log = logging.getLogger("bench.detect")


def cpu() -> float:
    """CPU seconds of this process and its finished children (the pool workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def bare_loop(files: list[Path], out: Path, threads: int | None) -> tuple[int, float]:
    """The upstream example's loop; returns (faces, seconds)."""
    saved = cv2.getNumThreads()
    if threads:
        cv2.setNumThreads(threads)
    try:
        t0 = time.perf_counter()
        cascade = cv2.CascadeClassifier(str(CASCADE))
        n = 0
        for i, f in enumerate(files):
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            gray = cv2.equalizeHist(gray)
            faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
            for j, (x, y, w, h) in enumerate(faces):
                cv2.imwrite(str(out / f"{i}_{j}.png"), image[y:y + h, x:x + w])
                n += 1
        return n, time.perf_counter() - t0
    finally:
        cv2.setNumThreads(saved)


def manifest(path: Path, files: list[Path], repeat: int) -> int:
    from PIL import Image

    rows = []
    for r in range(repeat):
        for f in files:
            with Image.open(f) as im:
                w, h = im.size
            iid = hashlib.sha256(f.read_bytes()).hexdigest()
            rows.append({"image_id": iid if r == 0 else f"{iid[:56]}{r:08d}", "pack": f.name, "offset": 0,
                         "length": f.stat().st_size, "source": "folder",
                         "post_id": f"{f.name}#{r}", "width": w, "height": h, "format": "PNG", "bytes": 0,
                         "fetched_at": datetime.now(timezone.utc)})
    write_parquet(path, rows, MANIFEST_SCHEMA)
    return len(rows)


def stage(tmp: Path, workers: int, tag: str) -> tuple[int, float]:
    out = tmp / f"stage-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    o = DetectOut(crops=str(out / "crops"), faces=str(out / "faces.parquet"), images=str(out / "images.parquet"),
                  detector=str(out / "detector.json"), contact_sheet=str(out / "sheet.png"),
                  summary=str(out / "summary.json"),
                  metrics=str(out / "metrics.json"))
    cfg = DetectConfig(cascade=str(CASCADE), workers=workers, out=o)
    t0 = time.perf_counter()
    s = detect(cfg, tmp / "manifest.parquet", REAL, progress=False)
    return s.faces, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="passes over the 46 images (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds, best kept (default 2)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "out" / "detect.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cores = default_workers()
    files = sorted(REAL.iterdir())
    best: dict[str, tuple[int, float]] = {}
    cpu_s: dict[str, float] = {}

    def keep(name, fn, *a):
        c0 = cpu()
        faces, secs = fn(*a)
        if name not in best or faces / secs > best[name][0] / best[name][1]:
            best[name] = (faces, secs)
            cpu_s[name] = cpu() - c0

    with tempfile.TemporaryDirectory(prefix="bench-detect-") as d:
        tmp = Path(d)
        n_images = manifest(tmp / "manifest.parquet", files, args.repeat)
        loop_files = files * args.repeat
        for rnd in range(args.rounds):
            bare_out = tmp / "bare"
            for name, threads in (("bare loop, 1 OpenCV thread", 1), ("bare loop, default OpenCV threads", None)):
                shutil.rmtree(bare_out, ignore_errors=True)
                bare_out.mkdir()
                keep(name, bare_loop, loop_files, bare_out, threads)
            keep("stage, 1 worker", stage, tmp, 1, "1")
            keep(f"stage, {cores} workers", stage, tmp, cores, "n")
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)

    rate = {k: f / s for k, (f, s) in best.items()}
    print(f"detect benchmark: {n_images} images ({len(files)} x {args.repeat}), {cores} cores, best of {args.rounds}")
    print(f"{'run':40s} {'faces':>6s} {'seconds':>8s} {'faces/s':>8s} {'CPU s':>7s} {'faces/CPU s':>11s}")
    for k, (f, s) in best.items():
        print(f"{k:40s} {f:6d} {s:8.2f} {rate[k]:8.2f} {cpu_s[k]:7.2f} {f / cpu_s[k]:11.2f}")
    print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (other processes share the cores)")
    r1 = rate["stage, 1 worker"] / rate["bare loop, 1 OpenCV thread"]
    rn = rate[f"stage, {cores} workers"] / (cores * rate["stage, 1 worker"])
    rd = rate[f"stage, {cores} workers"] / rate["bare loop, default OpenCV threads"]
    print(f"1 worker / bare loop (1 thread):          {r1:.2f}x  (goal >= 0.90) {'OK' if r1 >= 0.9 else 'MISSED'}")
    print(f"{cores} workers / ({cores} x 1 worker):             {rn:.2f}x  (goal >= 0.85) {'OK' if rn >= 0.85 else 'MISSED'}")
    print(f"{cores} workers / bare loop (default threads): {rd:.2f}x")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"images": n_images, "cores": cores, "runs": best, "faces_per_s": rate, "cpu_s": cpu_s,
                                           "ratio_1_worker_vs_bare": r1, "ratio_all_cores_vs_ideal": rn}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
