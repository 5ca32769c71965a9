"""The detect stage as one plain function: read the scrape manifest, process the images
not yet done under the current params (in parallel), then rebuild the outputs: the faces
table with the monochrome and near-duplicate decisions, the per-image table, a contact
sheet and summary counts.

Every output is a function of the inputs and params alone: images are processed in a fixed
order (largest first, then by image_id) and their results committed in that order, shards
are named by content, tables are sorted by id, and no clock, timing, worker count or machine
path is written (timings go to the log and the Prefect artifact)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from tasks.artifacts.boxes import read_boxes
from tasks.artifacts.detector import write_detector_spec
from tasks.artifacts.faces import FACES_SCHEMA, CropReader, kept_mask, write_faces, write_images
from tasks.artifacts.images import read_manifest
from tasks.detect.filters import find_duplicates
from tasks.detect.runner import default_workers, iter_results
from tasks.detect.state import State
from tasks.detect.work import ImageTask, RecordedFace, WorkSettings
from tasks.fileio import atomic_write_bytes, atomic_write_json
from tasks.params.detect import DetectConfig

log = logging.getLogger(__name__)


@dataclass
class DetectSummary:
    detector: str
    images: int = 0  # in the manifest
    processed: int = 0  # this run (the log's business, not summary.json's: it depends on the run's history)
    reused: int = 0  # done by an earlier run with the same params
    retried: int = 0  # of the processed: images whose earlier outcome was transient (missing, error, worker_crashed)
    bad: collections.Counter = field(default_factory=collections.Counter)
    with_face: int = 0  # images with at least one kept face
    faces: int = 0  # detected, kept or not
    kept: int = 0
    dropped: collections.Counter = field(default_factory=collections.Counter)
    monochrome: int = 0  # flagged (kept or dropped)
    faces_new: int = 0  # detected in this run
    seconds: float = 0.0
    work_seconds: float = 0.0  # the parallel part
    contact_sheet: Optional[str] = None

    def lines(self) -> list[str]:
        def fmt(c):
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"
        rate = self.faces_new / self.work_seconds if self.work_seconds else 0.0
        return [
            f"detector: {self.detector}; images: {self.images} ({self.processed} processed now, "
            f"{self.retried} of them retried after a transient failure, {self.reused} reused); "
            f"with a kept face: {self.with_face}",
            f"unusable images: {sum(self.bad.values())} ({fmt(self.bad)})",
            f"faces: {self.faces} detected, {self.kept} kept, {sum(self.dropped.values())} dropped ({fmt(self.dropped)}); "
            f"monochrome flagged: {self.monochrome}",
            f"time: {self.seconds:.1f}s ({self.faces_new} new faces, {rate:.1f} faces/s)",
        ]

    def as_dict(self) -> dict:
        """summary.json: what the data is, the same for the same inputs and params, however many
        runs it took."""
        return {"detector": self.detector, "images": self.images, "bad": dict(sorted(self.bad.items())),
                "with_face": self.with_face, "faces": self.faces, "kept": self.kept,
                "dropped": dict(sorted(self.dropped.items())), "monochrome": self.monochrome}

    def metrics(self) -> dict:
        """The headline numbers (detect.out.metrics, the DVC metric); by reason: as_dict()."""
        return {"images": self.images, "faces": self.faces, "kept": self.kept}

    def markdown(self, sheet_png: Optional[bytes] = None) -> str:
        rows = [("images in manifest", self.images), ("processed this run", self.processed),
                ("reused from earlier runs", self.reused), ("images with a kept face", self.with_face),
                ("faces detected", self.faces), ("faces kept", self.kept), ("monochrome flagged", self.monochrome)]
        rows += [(f"image unusable: {k}", v) for k, v in sorted(self.bad.items())]
        rows += [(f"face dropped: {k}", v) for k, v in sorted(self.dropped.items())]
        body = "\n".join(f"| {k} | {v} |" for k, v in rows)
        md = f"# detect: {self.detector}\n\n{self.seconds:.1f}s\n\n| count | n |\n|---|---|\n{body}\n"
        if sheet_png:
            import base64

            md += (f"\n## Sample crops\n\n`{self.contact_sheet}`\n\n"
                   f"![contact sheet](data:image/png;base64,{base64.b64encode(sheet_png).decode()})\n")
        return md


def decide(state_faces: pa.Table, cfg: DetectConfig) -> pa.Table:
    """The faces table: drop_reason and duplicate_of decided over all faces at once, so the
    result does not depend on the order images were processed in. Near-duplicates are
    searched among faces kept so far, largest detected box first, then by face_id: the
    best copy stays, the others point at it."""
    reasons = state_faces["drop_reason"].to_pylist()
    mono = state_faces["monochrome"].to_pylist()
    if cfg.drop_monochrome:
        reasons = ["monochrome" if r is None and m else r for r, m in zip(reasons, mono)]
    dup_of: list[Optional[str]] = [None] * len(reasons)
    if cfg.dedup_hamming is not None:
        fids = state_faces["face_id"].to_pylist()
        area = (pc.multiply(state_faces["box_w"].cast(pa.int64()), state_faces["box_h"].cast(pa.int64()))).to_numpy()
        hashes = state_faces["phash"].to_pylist()
        cand = [i for i, r in enumerate(reasons) if r is None and hashes[i] is not None]
        cand.sort(key=lambda i: (-int(area[i]), fids[i]))
        dup = find_duplicates(((fids[i], hashes[i]) for i in cand), cfg.dedup_hamming)
        pos = {f: i for i, f in enumerate(fids)}
        for fid, original in dup.items():
            i = pos[fid]
            reasons[i], dup_of[i] = "duplicate", original
    table = state_faces.select([f.name for f in FACES_SCHEMA])
    table = table.set_column(table.schema.get_field_index("drop_reason"), FACES_SCHEMA.field("drop_reason"),
                             pa.array(reasons, pa.string()))
    table = table.set_column(table.schema.get_field_index("duplicate_of"), FACES_SCHEMA.field("duplicate_of"),
                             pa.array(dup_of, pa.string()))
    return table.sort_by("face_id")


def contact_sheet(faces: pa.Table, crops_dir: str | os.PathLike, n: int, thumb: int = 64, cols: int = 8) -> bytes:
    """A PNG grid of up to `n` kept crops (a stable sample: the lowest face_ids)."""
    from PIL import Image

    kept = faces.filter(pa.array(kept_mask(faces))) if faces.num_rows else faces
    sample = sorted(zip(kept["face_id"].to_pylist(), kept["shard"].to_pylist()), key=lambda r: r[0])[:n] if n else []
    sample = [r for r in sample if r[1]]
    rows = max(1, -(-len(sample) // cols))
    sheet = Image.new("RGB", (cols * thumb, rows * thumb), (255, 255, 255))
    if sample:  # the reader knows the sample only: it reads those crops of each shard, not the whole shard
        ids = pa.array([fid for fid, _ in sample], pa.string())
        reader = CropReader(kept.filter(pc.is_in(kept["face_id"], value_set=ids)), crops_dir, cache_groups=2)
        order = sorted(range(len(sample)), key=lambda i: (sample[i][1], sample[i][0]))
        for i in order:
            im = reader.image(sample[i][0]).resize((thumb, thumb), Image.LANCZOS)
            sheet.paste(im, ((i % cols) * thumb, (i // cols) * thumb))
    buf = io.BytesIO()
    sheet.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def recorded_faces(boxes: str | os.PathLike | None, cfg: DetectConfig) -> dict[str, tuple[RecordedFace, ...]]:
    """image_id -> the faces a release recorded for it (scrape.out.boxes): cropped, not detected."""
    rows = read_boxes(boxes)
    other = sorted({(r["size"], r["pad_fill"]) for faces in rows.values() for r in faces
                    if (r["size"] is not None and r["size"] != cfg.size)
                    or (r["pad_fill"] is not None and r["pad_fill"] != cfg.pad_fill)}, key=str)
    if other:
        log.warning("detect: the release was cropped at size %s, pad_fill %s; detect.size %s, detect.pad_fill %s "
                    "here: the same face_ids, other pixels (and tags)", other[0][0], other[0][1], cfg.size,
                    cfg.pad_fill)
    return {image: tuple(RecordedFace(r["detector"], (r["box_x"], r["box_y"], r["box_w"], r["box_h"]),
                                      (r["crop_x0"], r["crop_y0"], r["crop_x1"], r["crop_y1"]), r["score"])
                         for r in faces) for image, faces in rows.items()}


def detect(cfg: DetectConfig, manifest: str | os.PathLike, images_dir: str | os.PathLike,
           progress: bool | None = None, boxes: str | os.PathLike | None = None) -> DetectSummary:
    """Run the stage: process new images, then rewrite faces, images, contact sheet, summary.
    Images with recorded faces in `boxes` (a release's) are cropped as recorded, not detected."""
    t0 = time.perf_counter()
    settings = WorkSettings.from_config(cfg)  # a missing or bad cascade fails here, before any work
    recorded = recorded_faces(boxes, cfg)
    if recorded:  # other recorded boxes, other faces: part of what decides an image's outcome
        digest = hashlib.sha256(repr(sorted(recorded.items())).encode()).hexdigest()
        settings = dataclasses.replace(settings, key=hashlib.sha256(f"{settings.key}|{digest}".encode()).hexdigest()[:16])
    table = read_manifest(manifest, ["image_id", "pack", "offset", "length", "width", "height"])
    images_dir = Path(images_dir)
    ids = table["image_id"].to_pylist()
    where = dict(zip(ids, zip(table["pack"].to_pylist(), table["offset"].to_pylist(), table["length"].to_pylist())))
    pixels = dict(zip(ids, (w * h for w, h in zip(table["width"].to_pylist(), table["height"].to_pylist()))))
    summary = DetectSummary(cfg.detector, images=len(set(ids)))

    state = State(cfg.out.crops, settings.key, set(ids), cfg.shard_rows)
    done, transient = state.done, state.transient
    # a fixed order (largest images first, so no worker is left with a big one at the end):
    # results are committed in this order, so it alone decides which face lands in which shard
    # (the key is the image_id, the content: an image moved from a loose file into a pack is not done again)
    todo = sorted((i for i in where if i not in done), key=lambda i: (-pixels[i], i))
    tasks = [ImageTask(i, str((images_dir / where[i][0]).resolve()), where[i][1], where[i][2], where[i][0],
                       recorded.get(i, ())) for i in todo]
    summary.reused, summary.processed = len(done), len(tasks)
    summary.retried = sum(t.image_id in transient for t in tasks)
    workers = cfg.workers or default_workers()
    log.info("%d images: %d to process with %s (%s, %d workers; %d retried after a transient failure), "
             "%d done earlier with the same params",
             summary.images, len(tasks), cfg.detector, cfg.runner, workers, summary.retried, len(done))

    t_work = time.perf_counter()
    if tasks:
        state.reopen()
        bar = tqdm(total=len(tasks), desc="detect", unit="img", mininterval=1.0,
                   disable=None if progress is None else not progress)  # None: on when stderr is a terminal
        try:
            for res in iter_results(tasks, settings, cfg.runner, workers, cfg.dask_address):
                state.add(res, cfg.detector, cfg.size)
                summary.faces_new += len(res.faces)
                if res.status != "ok":
                    log.debug("image %s unusable: %s (%s)", res.image_id, res.reason, res.detail)
                bar.update(1)
                bar.set_postfix(faces=summary.faces_new, refresh=False)
        finally:
            bar.close()
            state.checkpoint(final=True)  # keep what is done, even when interrupted
    summary.work_seconds = time.perf_counter() - t_work

    faces = decide(state.faces_table(), cfg)
    write_faces(cfg.out.faces, faces)
    images = state.images_table()
    write_images(cfg.out.images, images)
    _count(summary, faces, images)
    sheet = contact_sheet(faces, cfg.out.crops, cfg.contact_sheet_faces)
    atomic_write_bytes(cfg.out.contact_sheet, sheet)
    write_detector_spec(cfg.out.detector, cfg, settings.cascade_sha256 or None)
    summary.contact_sheet = cfg.out.contact_sheet
    summary.seconds = time.perf_counter() - t0
    atomic_write_json(cfg.out.summary, summary.as_dict())
    atomic_write_json(cfg.out.metrics, summary.metrics())
    if cfg.detector == "animeface" and summary.images - sum(summary.bad.values()) >= 20 and summary.faces == 0:
        log.warning("animeface found no face in %d images: check the Pillow version (10.4 works, 13 does not)",
                    summary.images)
    return summary


def _count(summary: DetectSummary, faces: pa.Table, images: pa.Table) -> None:
    summary.bad = collections.Counter(r for r in images["reason"].to_pylist() if r)
    reasons = faces["drop_reason"].to_pylist()
    summary.faces = len(reasons)
    summary.kept = sum(r is None for r in reasons)
    summary.dropped = collections.Counter(r for r in reasons if r)
    summary.monochrome = int(np.sum(faces["monochrome"].to_numpy(zero_copy_only=False))) if faces.num_rows else 0
    summary.with_face = len({i for i, r in zip(faces["image_id"].to_pylist(), reasons) if r is None})
