"""Manifests and configs for the detect tests: real illustrations read in place from
../shared/data/real, plus derived files (rotated, transparent, corrupt) written to tmp."""

from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from tasks.artifacts.images import MANIFEST_SCHEMA
from tasks.detect.work import ImageResult, ImageTask, WorkSettings, process_image
from tasks.fileio import write_parquet
from tasks.params.detect import DetectConfig, DetectOut

SHARED = Path(__file__).resolve().parents[3] / "shared"
REAL = SHARED / "data" / "real"
CASCADE = SHARED / "models" / "lbpcascade_animeface.xml"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(path: Path, files: list[Path], images_dir: Path) -> dict[str, str]:
    """A raw_manifest over `files` (paths relative to images_dir); returns {file name: image_id}."""
    rows, ids = [], {}
    for f in files:
        iid = sha(f)
        ids[f.name] = iid
        rows.append({"image_id": iid, "pack": str(Path(_rel(f, images_dir))), "offset": 0,
                     "length": f.stat().st_size, "source": "folder", "post_id": f.name,
                     "width": 1, "height": 1, "format": f.suffix.lstrip(".").upper(), "bytes": f.stat().st_size,
                     "fetched_at": datetime(2026, 11, 21, tzinfo=timezone.utc)})
    write_parquet(path, rows, MANIFEST_SCHEMA)
    return ids


def _rel(f: Path, base: Path) -> str:
    import os

    return os.path.relpath(f.resolve(), base.resolve())


def config(out: Path, **kw) -> DetectConfig:
    o = DetectOut(crops=str(out / "crops"), faces=str(out / "faces.parquet"), images=str(out / "images.parquet"),
                  detector=str(out / "detector.json"), contact_sheet=str(out / "sheet.png"),
                  summary=str(out / "summary.json"),
                  metrics=str(out / "metrics.json"))
    return replace(DetectConfig(cascade=str(CASCADE), workers=2, out=o), **kw)


def crash_on_marker(task: ImageTask, settings: WorkSettings) -> ImageResult:
    """The real per-image work, except that the worker process dies (SIGKILL, as a segfault in a
    native decoder would end it) on an image whose manifest name contains CRASH. For the process
    pool only: it is imported by name in the spawned workers."""
    if "CRASH" in task.name:
        os.kill(os.getpid(), signal.SIGKILL)
    return process_image(task, settings)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative name -> bytes), for byte-for-byte comparisons of outputs."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
