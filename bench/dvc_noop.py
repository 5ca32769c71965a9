"""`dvc repro` with nothing changed, on a project holding 10,000+ images and faces.

    python bench/dvc_noop.py [--faces 10000]

Builds a throwaway copy of the project: `scrape` (folder source) collects N generated images
for real; the detect outputs (faces.parquet + crop shards, one face per image) are written with
the dataset API and recorded with `dvc commit`; `review` runs for real over the N faces. Then it
times the no-op `dvc repro scrape detect review` (median of 3), against the same no-op on a copy
holding the 46 real illustrations, measured in the same run. Goal: <= 2 s with 10,000+ faces."""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.artifacts.detector import write_detector_spec  # noqa: E402
from tasks.artifacts.faces import ShardWriter, face_id, write_faces  # noqa: E402
from tasks.artifacts.images import read_manifest  # noqa: E402
from tasks.fileio import atomic_write_json, write_parquet  # noqa: E402
from tasks.params.detect import DetectConfig  # noqa: E402
from tests.support.project import make_copy, run  # noqa: E402

STAGES = ["scrape", "detect", "review"]


def noop_seconds(project: Path, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run(["dvc", "repro"] + STAGES, project).stdout
        times.append(time.perf_counter() - t0)
        assert "Running stage" not in out, out
    return statistics.median(times)


def synth_detect(project: Path, n_max: int) -> int:
    """faces.parquet + crop shards: one face per scraped image, as detect would write them."""
    manifest = read_manifest(project / "data/raw/manifest.parquet").to_pylist()[:n_max]
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 150, 150)).save(buf, "PNG")
    png = buf.getvalue()
    crops = project / "data/faces/crops"
    writer = ShardWriter(crops, "bench", rows_per_shard=2048)
    rows = []
    for m in manifest:
        box = (0, 0, m["width"], m["height"])
        fid = face_id(m["image_id"], "lbpcascade", box)
        rows.append(dict(face_id=fid, image_id=m["image_id"], detector="lbpcascade", score=1.0, box_x=0, box_y=0,
                         box_w=m["width"], box_h=m["height"], crop_x0=0, crop_y0=0, crop_x1=m["width"],
                         crop_y1=m["height"], size=128, monochrome=False, duplicate_of=None, drop_reason=None,
                         hair_rgb=None, eye_rgb=None, skin_rgb=None, shard=writer.add(fid, png), params_key="bench"))
    writer.flush()
    write_faces(project / "data/faces/faces.parquet", rows)
    import pyarrow as pa
    write_parquet(project / "data/faces/images.parquet", pa.table({"image_id": [m["image_id"] for m in manifest]}),
                  pa.schema([("image_id", pa.string())]))
    Image.new("RGB", (64, 64)).save(project / "data/faces/contact_sheet.png")
    atomic_write_json(project / "data/faces/summary.json", {"faces": len(rows)})
    write_detector_spec(project / "data/faces/detector.json", DetectConfig(), None)
    return len(rows)


def build(tmp: Path, name: str, folder: Path, faces: int | None) -> Path:
    project = make_copy(tmp / name, {"scrape": {"folder": str(folder), "filters": {"min_width": 0, "min_height": 0,
                                                                                  "max_images": 10**6}}})
    run(["dvc", "repro", "scrape"], project, timeout=1800)
    if faces is None:
        run(["dvc", "repro", "detect"], project, timeout=1800)
    else:
        (project / "data/faces").mkdir(parents=True, exist_ok=True)
        synth_detect(project, faces)
        run(["dvc", "commit", "-f", "detect"], project, timeout=600)
    run(["dvc", "repro", "review"], project, timeout=1800)
    return project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=10000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = tmp / "images"
        images.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.faces):  # distinct bytes: the store keeps every one
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(images / f"{i:06d}.png")
        small = build(tmp, "small", ROOT.parent / "shared" / "data" / "real", None)
        big = build(tmp, "big", images, args.faces)
        t_small, t_big = noop_seconds(small), noop_seconds(big)
    print(f"no-op dvc repro {' '.join(STAGES)}: 46 illustrations {t_small:.2f}s; "
          f"{args.faces} images + {args.faces} faces {t_big:.2f}s")
    print(f"ratio big/small: {t_big / t_small:.2f}; goal <= 2 s with 10,000+ faces: {'met' if t_big <= 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
