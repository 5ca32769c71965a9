"""Synthetic anime-post folders for the scale benchmark: N distinct images with faces, made from ../shared.

Each image is a background — a random crop of one of the 46 real illustrations (flipped, colour-shifted,
rescaled) or a smooth colour field with grain — with 1 to 3 real face crops from data/faces and
data/faces_train pasted on it (each flipped, colour-shifted and rescaled to 110-360 px, so lbpcascade
finds most of them at detect's defaults), then encoded as a post would be: JPEG (quality 80-95) for
most, PNG for a fifth, 500-1,500 px a side, about 100 KB to 1 MB. A few bits of grain make every file's
bytes its own. Image i is a pure function of (seed, i): the same seed gives the same bytes, whichever
process made it, and a folder of n images is the first n of a larger one.

Layout, as a booru dump is laid out: `<dest>/<i // 1000 as 4 digits>/<i as 7 digits>.<jpg|png>`, and
`<dest>/metadata.jsonl` (the folder source's sidecar: id, file_name, tags, rating, artist).
`<dest>/synth.json` records the seed and the count; a second call with the same seed adds only
the missing images.

    python bench/synth.py DEST --n 4000 [--seed 0] [--workers 2] [--check 200]

`--check K` runs lbpcascade (detect's defaults: scale 1.1, 5 neighbours, min 64 px, on the
equalised grey image) on K of the images and prints the share with a face."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VERSION = 2  # bump when an image's bytes for a given (seed, i) change
CHUNK = 50  # images per task handed to a worker
BG_MAX_SIDE = 1600  # backgrounds are decoded once per worker, downscaled to this
TAGS = ["1girl", "solo", "smile", "long_hair", "short_hair", "blush", "open_mouth", "looking_at_viewer", "hat",
        "ribbon", "twintails", "ponytail", "glasses", "school_uniform", "outdoors", "simple_background"]

log = logging.getLogger("bench.synth")


def sources(shared: Path = SHARED) -> tuple[list[str], list[str]]:
    """(background files, face crop files), sorted: the same list on every machine with ../shared."""
    real = sorted(str(p) for p in (shared / "data" / "real").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    faces = sorted(str(p) for d in ("faces", "faces_train") for p in (shared / "data" / d).iterdir()
                   if p.suffix.lower() in (".jpg", ".png"))
    if not real or not faces:
        raise SystemExit(f"error: no illustrations or face crops under {shared / 'data'}")
    return real, faces


@lru_cache(maxsize=64)
def _background(path: str) -> Image.Image:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((BG_MAX_SIDE, BG_MAX_SIDE), Image.BILINEAR)
        return im


def _face(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _shift(im: Image.Image, rng: np.random.Generator, amount: float) -> Image.Image:
    """A colour shift: a per-channel gain and offset (so also a slight change of hue), as a lookup table."""
    gain, offset = rng.uniform(1 - amount, 1 + amount, 3), rng.uniform(-40 * amount, 40 * amount, 3)
    x = np.arange(256, dtype=np.float32)
    lut = np.concatenate([np.clip(x * g + o, 0, 255) for g, o in zip(gain, offset)]).astype(np.uint8)
    return im.point(lut.tolist())


@lru_cache(maxsize=1)
def _grain() -> np.ndarray:
    """A fixed tile of film grain (int16), cut at random offsets: the same for every worker."""
    return np.random.default_rng(12345).normal(0, 6, (BG_MAX_SIDE, BG_MAX_SIDE, 1)).astype(np.int16)


def _field(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A smooth random colour field with grain (a plain-background post)."""
    cells = rng.integers(0, 256, (rng.integers(2, 6), rng.integers(2, 6), 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(cells).resize((w, h), Image.BILINEAR), dtype=np.int16)
    g = _grain()
    y0, x0 = int(rng.integers(0, g.shape[0] - h + 1)), int(rng.integers(0, g.shape[1] - w + 1))
    return Image.fromarray(np.clip(a + g[y0:y0 + h, x0:x0 + w], 0, 255).astype(np.uint8))


def _vary_face(face: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    """A variant of a face crop that near-duplicate detection (pHash) does not take for the original: a
    sub-crop at a random offset, a small rotation, a flip, a colour shift, rescaled to s x s."""
    fw, fh = face.size
    k = rng.uniform(0.75, 1.0)
    cw, ch = int(fw * k), int(fh * k)
    x0, y0 = int(rng.integers(0, fw - cw + 1)), int(rng.integers(0, fh - ch + 1))
    face = face.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        face = face.transpose(Image.FLIP_LEFT_RIGHT)
    face = face.rotate(float(rng.uniform(-15, 15)), Image.BILINEAR, expand=False, fillcolor=tuple(
        int(v) for v in np.asarray(face)[0].mean(axis=0)))
    return _shift(face, rng, 0.1).resize((s, s), Image.BICUBIC)


def make_image(i: int, seed: int, real: list[str], faces: list[str]) -> tuple[bytes, str, dict]:
    """Image i: (encoded bytes, extension, metadata row)."""
    rng = np.random.default_rng([seed, VERSION, i])
    side, aspect = rng.uniform(500, 1500), rng.uniform(0.65, 1.5)  # the long side, width / height
    w, h = (int(side), int(side / aspect)) if aspect >= 1 else (int(side * aspect), int(side))
    w, h = max(500, w), max(500, h)
    if rng.random() < 0.7:  # a region of a real illustration
        bg = _background(real[rng.integers(len(real))])
        frac = rng.uniform(0.5, 1.0)
        cw, ch = max(16, int(bg.width * frac)), max(16, int(bg.height * frac))
        x0, y0 = rng.integers(0, bg.width - cw + 1), rng.integers(0, bg.height - ch + 1)
        canvas = bg.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR, reducing_gap=2.0)
        if rng.random() < 0.5:
            canvas = canvas.transpose(Image.FLIP_LEFT_RIGHT)
        canvas = _shift(canvas, rng, 0.15)
    else:
        canvas = _field(w, h, rng)
    placed: list[tuple[int, int, int]] = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
        s = int(rng.uniform(110, min(360, 0.6 * min(w, h))))
        for _try in range(8):  # a place that does not overlap an earlier face
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            if all(abs(x - px) >= (s + ps) // 2 + 8 or abs(y - py) >= (s + ps) // 2 + 8 for px, py, ps in placed):
                break
        else:
            continue
        canvas.paste(_vary_face(_face(faces[rng.integers(len(faces))]), s, rng), (x, y))
        placed.append((x, y, s))
    a = np.asarray(canvas).copy()  # i in the low bits of the first pixels: every image's pixels its own
    a[0, :32, 0] = (a[0, :32, 0] & 0xFE) | ((i >> np.arange(32)) & 1).astype(np.uint8)
    canvas = Image.fromarray(a)
    buf = io.BytesIO()
    if rng.random() < 0.2 and w * h <= 900_000:
        canvas.save(buf, "PNG", compress_level=1)
        ext = "png"
    else:
        canvas.save(buf, "JPEG", quality=int(rng.integers(80, 96)), subsampling=int(rng.integers(0, 3)))
        ext = "jpg"
    tags = sorted(set(rng.choice(TAGS, size=int(rng.integers(2, 7)), replace=False).tolist()) | {"1girl"})
    meta = {"id": 10_000_000 + i, "tags": tags, "rating": "general", "artist": f"artist_{int(rng.integers(500))}",
            "width": w, "height": h}
    return buf.getvalue(), ext, meta


def relpath(i: int, ext: str) -> str:
    return f"{i // 1000:04d}/{i:07d}.{ext}"


def _chunk(args: tuple[int, int, int, str, list[str], list[str]]) -> list[tuple[int, str, dict, int]]:
    lo, hi, seed, dest, real, faces = args
    out = []
    for i in range(lo, hi):
        data, ext, meta = make_image(i, seed, real, faces)
        rel = relpath(i, ext)
        path = Path(dest) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        out.append((i, rel, meta, len(data)))
    return out


def synthesise(dest: Path, n: int, seed: int = 0, workers: int | None = None) -> dict:
    """Make images [0, n) under dest (adding only the missing ones); returns dest's synth.json."""
    dest.mkdir(parents=True, exist_ok=True)
    spec_path = dest / "synth.json"
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    if spec and (spec.get("seed"), spec.get("version")) != (seed, VERSION):
        raise SystemExit(f"error: {dest} holds images of seed {spec.get('seed')} version {spec.get('version')}: "
                         f"use another folder for seed {seed}")
    have = int(spec.get("n", 0))
    rows: dict[int, dict] = {}
    meta_path = dest / "metadata.jsonl"
    if meta_path.is_file():
        for line in meta_path.read_text().splitlines():
            r = json.loads(line)
            rows[r["id"] - 10_000_000] = r
    real, faces = sources()
    todo = [i for i in range(n) if i >= have or i not in rows]
    t0, made, nbytes = time.perf_counter(), 0, 0
    if todo:
        workers = workers or os.cpu_count() or 1
        lo, hi = todo[0], n
        tasks = [(a, min(a + CHUNK, hi), seed, str(dest), real, faces) for a in range(lo, hi, CHUNK)]
        with ProcessPoolExecutor(workers) as pool:
            for res in pool.map(_chunk, tasks):
                for i, rel, meta, size in res:
                    rows[i] = {"file_name": rel, **meta}
                    made, nbytes = made + 1, nbytes + size
                if made and made % 2000 < CHUNK:
                    log.info("%d / %d images", made, len(todo))
    elapsed = time.perf_counter() - t0
    total = max(n, have)
    with open(meta_path.with_suffix(".part"), "w") as f:
        for i in range(total):
            f.write(json.dumps(rows[i], sort_keys=True) + "\n")
    os.replace(meta_path.with_suffix(".part"), meta_path)
    spec = {"seed": seed, "version": VERSION, "n": total}
    spec_path.write_text(json.dumps(spec) + "\n")
    if made:
        log.info("made %d images (%.1f MB, %.0f KB each) in %.1f s: %.1f images/s with %d workers", made,
                 nbytes / 1e6, nbytes / made / 1e3, elapsed, made / elapsed, workers)
    return {**spec, "made": made, "made_bytes": nbytes, "seconds": round(elapsed, 2),
            "images_per_s": round(made / elapsed, 2) if made else None}


def view(src: Path, dest: Path, n: int) -> Path:
    """A folder of the first n images of src, as hard links (no bytes copied), with its own metadata.jsonl."""
    rows = [json.loads(line) for line in (src / "metadata.jsonl").read_text().splitlines()[:n]]
    if len(rows) < n:
        raise SystemExit(f"error: {src} holds {len(rows)} images, {n} wanted")
    for r in rows:
        p = dest / r["file_name"]
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists():
            os.link(src / r["file_name"], p)
    (dest / "metadata.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return dest


def check_faces(dest: Path, k: int, cascade: Path = SHARED / "models" / "lbpcascade_animeface.xml") -> float:
    """Share of k images (evenly spread) in which lbpcascade finds a face, at detect's defaults."""
    import cv2

    rows = [json.loads(line) for line in (dest / "metadata.jsonl").read_text().splitlines()]
    pick = rows[:: max(1, len(rows) // k)][:k]
    clf = cv2.CascadeClassifier(str(cascade))
    hits = 0
    for r in pick:
        grey = cv2.equalizeHist(cv2.imread(str(dest / r["file_name"]), cv2.IMREAD_GRAYSCALE))
        hits += len(clf.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(64, 64))) > 0
    return hits / len(pick)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    ap.add_argument("--check", type=int, default=0, help="run lbpcascade on this many images")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    r = synthesise(args.dest, args.n, args.seed, args.workers)
    print(json.dumps(r))
    if args.check:
        print(f"lbpcascade finds a face in {check_faces(args.dest, args.check):.2f} of {args.check} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
