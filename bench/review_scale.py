"""The review queue at scale (issue 22, item 6): the review stage over F kept faces, and its contact
sheet opened in headless Chromium, at F = 4 k (the base) and each larger F.

For each F:
1. a faces dataset of F kept faces with crop shards of `detect.shard_rows` (2,048) rows, built from the
   8,000 real crops of ../shared (data/faces, data/faces_train): face i is crop i mod 8,000, flipped,
   rotated and channel-swapped by i // 8,000, so every crop's pixels are its own;
2. the review stage's own command (`python -m tasks.review --params ...`), the repo's params.yaml with
   the review paths pointed there, measured as a process tree (wall, CPU, the largest process's peak RSS
   through GNU time, the tree's sampled RSS), and the files and bytes it wrote;
3. review/queue.html from file:// in Debian's headless Chromium (tests/support/review_sheet_driver.mjs): page 1
   shown, then the last page through the page box, its sprite decoded, one face marked a false positive,
   the page reloaded and the mark still there; the browser's process tree RSS (sampled: node, Chromium and its renderers).

    python bench/review_scale.py [--faces 4k,16k,64k] [--work DIR] [--keep]

Prints one row per F and the growth against the base; writes bench/out/review-scale-<sizes>.json."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from scale import label, parse_sizes  # noqa: E402
from scale_measure import machine, measured, usage  # noqa: E402
from tests.support.project import env  # noqa: E402
from tests.support.review import build_faces  # noqa: E402
from tests.support.web import ensure_browser, ensure_node_modules  # noqa: E402

log = logging.getLogger("bench.review_scale")
OUT = HERE / "out"
SHARED = ROOT.parent / "shared"
DRIVER = ROOT / "tests" / "support" / "review_sheet_driver.mjs"
MB = 1e6


def real_crops() -> list[Path]:
    crops = sorted((SHARED / "data" / "faces").glob("*.png")) + sorted((SHARED / "data" / "faces_train").glob("*.png"))
    if not crops:
        raise SystemExit(f"error: no crops under {SHARED}/data/faces*: the shared test data is needed")
    return crops


def variant(path: Path, k: int, size: int) -> bytes:
    """Crop `path` at detect's crop size, made distinct by k (0-7): flipped (bit 0), rotated (bit 1),
    channels swapped (bit 2); a PNG at detect's compression (6)."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.BICUBIC)
    if k & 1:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    if k & 2:
        im = im.transpose(Image.ROTATE_90)
    if k & 4:
        r, g, b = im.split()
        im = Image.merge("RGB", (b, r, g))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def build(root: Path, n: int, crops: list[Path], shard_rows: int, size: int) -> dict:
    t0 = time.perf_counter()
    pairs = ((f"bench-face-{i}", variant(crops[i % len(crops)], (i // len(crops)) % 8, size)) for i in range(n))
    build_faces(root, list(pairs), rows_per_shard=shard_rows, run=hashlib.sha256(str(n).encode()).hexdigest()[:8])
    return {"seconds": round(time.perf_counter() - t0, 1), "crops": vars(usage([root / "crops"]))}


def params_for(root: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    out = {k: str(root / "review" / Path(v).name) for k, v in params["review"]["out"].items()}
    params["review"]["out"] = out
    params["review"]["decisions"] = str(root / "review" / "false_positives.csv")
    (root / "review").mkdir(exist_ok=True)
    (root / "review" / "false_positives.csv").write_text("face_id,false_positive,reviewer,note\n")
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def browse(html: Path, logs: Path, e: dict) -> dict:
    """Page 1, the last page (through the page box), its sprite decoded, one face marked, reload."""
    cells = "document.querySelectorAll('#grid .cell').length"
    stored = ("storedMarks().then((m) => ((m || {}).fp || {})"  # the sheet's own read of its IndexedDB
              "[document.querySelector('#grid .cell').dataset.fid] === 1)")
    saved_step = {"wait": "document.body.dataset.saved === 'saved'"}  # what the header tells the reviewer
    steps = [
        {"goto": html.as_uri()},
        {"wait": "document.body.dataset.page === '1'"},
        {"eval": f"({{pages: META.pages, total: META.total, cells: {cells}, ms: performance.now()}})"},
        {"eval": "(() => { const p = document.getElementById('page'); p.value = META.pages; "
                 "p.dispatchEvent(new Event('change')); return performance.now(); })()"},
        {"wait": "document.body.dataset.page === String(META.pages)"},
        {"eval": "(async () => { const i = new Image(); "  # the sprite the page shows (a blob: URL from its part file)
                 "i.src = getComputedStyle(document.querySelector('#grid .thumb')).backgroundImage.slice(5, -2); "
                 f"await i.decode(); return {{w: i.naturalWidth, h: i.naturalHeight, cells: {cells}, "
                 "ms: performance.now()}; })()"},
        {"click": "#grid .cell .thumb"},
        {"eval": "document.querySelector('#grid .cell').classList.contains('fp')"},
        saved_step,  # then reload at once
        {"eval": stored},  # the mark in IndexedDB before the reload: a lost mark then tells unsaved from unread
        {"reload": True},
        {"wait": "document.body.dataset.page === String(META.pages)"},
        {"eval": "document.querySelector('#grid .cell').classList.contains('fp')"},
        {"eval": stored},
    ]
    m = measured(["node", str(DRIVER), json.dumps(steps)], ROOT, e, logs / "browser.log", check=False)
    text = (logs / "browser.log").read_text()
    start = text.find("{")
    try:
        result = json.loads(text[start:].splitlines()[0]) if start >= 0 else {}
    except ValueError:
        result = {}
    if not result.get("ok"):
        raise SystemExit(f"error: the review sheet did not work in the browser: {result.get('error') or text[-500:]}")
    first, switch, last, marked, saved, kept, read = result["results"]
    return {"wall_s": round(m.wall_s, 2), "tree_rss_mb": round(m.tree_rss_mb), "launch_ms": result.get("launch_ms"),
            "pages": first["pages"], "total": first["total"], "first_page_cells": first["cells"],
            "first_page_ms": round(first["ms"]), "last_page_ms": round(last["ms"] - switch),
            "last_page_cells": last["cells"], "sprite_px": [last["w"], last["h"]],
            "mark_shown": marked, "mark_saved": saved, "mark_kept_after_reload": kept, "mark_stored_after_reload": read,
            "console": result.get("console", []), "errors": result.get("errors", [])}


def run_size(n: int, work: Path, crops: list[Path], e: dict) -> dict:
    root = work / label(n)
    root.mkdir(parents=True)
    logs = root / "logs"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    made = build(root, n, crops, params["detect"]["shard_rows"], params["detect"]["size"])
    log.info("F = %s: %d faces built in %.0f s", label(n), n, made["seconds"])
    cmd = [sys.executable, "-m", "tasks.review", "--params", str(params_for(root)), "--faces",
           str(root / "faces.parquet"), "--crops", str(root / "crops"), "--manifest", str(root / "manifest.parquet")]
    stage = measured(cmd, root, e, logs / "review.log")  # the stage leaves its report under reports/ of its cwd
    out = usage([root / "review"])
    res = {"n": n, "build": made, "review": {"wall_s": round(stage.wall_s, 2), "cpu_s": round(stage.cpu_s, 2),
                                            "ms_per_face": round(1000 * stage.wall_s / n, 3),
                                            "cpu_ms_per_face": round(1000 * stage.cpu_s / n, 3),
                                            "max_rss_mb": round(stage.max_rss_mb), "tree_rss_mb": round(stage.tree_rss_mb),
                                            "files": out.files, "mb": round(out.bytes / MB, 1), "load": stage.load}}
    res["browser"] = browse(root / "review" / "queue.html", logs, e)
    log.info("F = %s: review %.1f s, %d MB; browser %d MB", label(n), stage.wall_s, stage.max_rss_mb,
             res["browser"]["tree_rss_mb"])
    return res


def table(results: list[dict]) -> str:
    base = results[0]
    lines = [f"{'faces':>7} {'review s':>9} {'CPU ms/face':>12} {'x base':>7} {'peak MB':>8} {'files':>6} {'out MB':>7} "
             f"{'pages':>6} {'browser MB':>11} {'page 1 ms':>10} {'last page ms':>13} {'mark kept':>10}"]
    for r in results:
        rv, b = r["review"], r["browser"]
        lines.append(f"{r['n']:7,d} {rv['wall_s']:9.1f} {rv['cpu_ms_per_face']:12.2f} "
                     f"{rv['cpu_ms_per_face'] / base['review']['cpu_ms_per_face']:7.2f} {rv['max_rss_mb']:8d} "
                     f"{rv['files']:6d} {rv['mb']:7.1f} {b['pages']:6d} {b['tree_rss_mb']:11d} {b['first_page_ms']:10d} "
                     f"{b['last_page_ms']:13d} {str(b['mark_kept_after_reload']):>10}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", default="4k,16k,64k", help="comma-separated F (1k = 1000); the base is always included")
    ap.add_argument("--base", default="4k", help="the F every other is compared with (default 4k)")
    ap.add_argument("--work", type=Path, default=None, help="where the scratch directory goes (default: the system's temp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from scale import parse_size

    sizes = parse_sizes(args.faces, parse_size(args.base))
    ensure_node_modules()
    e = {**env(), "MOEFLOW_CHROMIUM": str(ensure_browser()), "PYTHONPATH": str(ROOT)}
    crops = real_crops()
    work = Path(tempfile.mkdtemp(prefix="moeflow-review-scale-", dir=args.work))
    report = {"sizes": sizes, "machine": machine(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "results": []}
    OUT.mkdir(exist_ok=True)
    out_path = OUT / f"review-scale-{'-'.join(label(n) for n in sizes)}.json"
    try:
        for n in sizes:
            report["results"].append(run_size(n, work, crops, e))
            out_path.write_text(json.dumps(report, indent=1) + "\n")
        report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out_path.write_text(json.dumps(report, indent=1) + "\n")
        print(table(report["results"]))
        print(f"\n{out_path.relative_to(ROOT)}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
