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
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from tasks.artifacts.boxes import read_boxes
from tasks.artifacts.detector import write_detector_spec
from tasks.artifacts.faces import FACES_SCHEMA, CropReader, write_faces, write_images
from tasks.artifacts.images import read_manifest
from tasks.detect.filters import find_duplicates
from tasks.detect.runner import default_workers, iter_results
from tasks.detect.state import State, last_per_key, sorted_by
from tasks.detect.work import ImageTask, RecordedFace, WorkSettings
from tasks.fileio import atomic_write_bytes, atomic_write_json
from tasks.params.detect import DetectConfig

log = logging.getLogger(__name__)

TASK_BATCH = 1024  # manifest rows made into ImageTasks at a time, as the runner takes them


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
    best copy stays, the others point at it. Columnar: no Python object per face."""
    reasons = state_faces["drop_reason"]
    if cfg.drop_monochrome:
        mono = pc.and_(pc.is_null(reasons), state_faces["monochrome"])
        reasons = pc.if_else(mono, pa.scalar("monochrome", pa.string()), reasons)
    n = state_faces.num_rows
    original = np.full(n, -1, dtype=np.int64)  # row -> the row it duplicates, or -1
    if cfg.dedup_hamming is not None:
        cand = pc.indices_nonzero(pc.and_(pc.is_null(reasons), pc.is_valid(state_faces["phash"])))
        area = pc.multiply(state_faces["box_w"].cast(pa.int64()), state_faces["box_h"].cast(pa.int64()))
        keys = pa.table({"area": area.take(cand), "face_id": state_faces["face_id"].take(cand)})
        order = cand.take(pc.sort_indices(keys, sort_keys=[("area", "descending"), ("face_id", "ascending")]))
        del keys
        rows = order.to_numpy()
        dup = find_duplicates(state_faces["phash"].take(order).to_numpy(), cfg.dedup_hamming)
        hit = dup >= 0
        original[rows[hit]] = rows[dup[hit]]
    is_dup = original >= 0
    reasons = pc.if_else(pa.array(is_dup), pa.scalar("duplicate", pa.string()), reasons)
    dup_of = state_faces["face_id"].take(pa.array(np.where(is_dup, original, 0), mask=~is_dup))
    table = state_faces.select([f.name for f in FACES_SCHEMA])
    table = table.set_column(table.schema.get_field_index("drop_reason"), FACES_SCHEMA.field("drop_reason"), reasons)
    table = table.set_column(table.schema.get_field_index("duplicate_of"), FACES_SCHEMA.field("duplicate_of"), dup_of)
    return sorted_by(table, "face_id")


def contact_sheet(faces: pa.Table, crops_dir: str | os.PathLike, n: int, thumb: int = 64, cols: int = 8) -> bytes:
    """A PNG grid of up to `n` kept crops (a stable sample: the lowest face_ids)."""
    from PIL import Image

    kept = faces.filter(pc.is_null(faces["drop_reason"]))
    sample = []
    if n and kept.num_rows:
        lowest = kept.select(["face_id", "shard"]).take(
            pc.select_k_unstable(kept.select(["face_id"]), k=min(n, kept.num_rows),
                                 sort_keys=[("face_id", "ascending")]))
        sample = sorted(zip(lowest["face_id"].to_pylist(), lowest["shard"].to_pylist()))
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
    summary = DetectSummary(cfg.detector)
    state_faces, images = _process(cfg, settings, manifest, Path(images_dir), recorded, summary, progress)
    faces = decide(state_faces, cfg)
    del state_faces  # decide's table shares its columns but for the two it decided
    write_faces(cfg.out.faces, faces)
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


def _process(cfg: DetectConfig, settings: WorkSettings, manifest: str | os.PathLike, images_dir: Path,
             recorded: dict[str, tuple[RecordedFace, ...]], summary: DetectSummary,
             progress: bool | None) -> tuple[pa.Table, pa.Table]:
    """Process the images of the manifest not done yet under the current params, committing their
    results to the state in task order; returns the state's faces and images tables."""
    table = last_per_key(read_manifest(manifest, ["image_id", "pack", "offset", "length", "width", "height"]),
                         "image_id")  # an image_id listed twice counts once, with its last row
    summary.images = table.num_rows
    state = State(cfg.out.crops, settings.key, table["image_id"], cfg.shard_rows)
    done, transient = state.image_ids(final=True), state.image_ids(final=False)
    rows = _order(table, done)
    summary.reused, summary.processed = len(done), len(rows)
    todo_ids = table["image_id"].take(pa.array(rows))
    summary.retried = int(np.count_nonzero(pc.is_in(todo_ids, value_set=transient).to_numpy(zero_copy_only=False)))
    del todo_ids
    workers = cfg.workers or default_workers()
    log.info("%d images: %d to process with %s (%s, %d workers; %d retried after a transient failure), "
             "%d done earlier with the same params",
             summary.images, len(rows), cfg.detector, cfg.runner, workers, summary.retried, len(done))

    t_work = time.perf_counter()
    if len(rows):
        state.reopen()
        bar = tqdm(total=len(rows), desc="detect", unit="img", mininterval=1.0,
                   disable=None if progress is None else not progress)  # None: on when stderr is a terminal
        try:
            tasks = _tasks(table, rows, images_dir, recorded)
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
    return state.faces_table(), state.images_table()  # the state (its open shard's crops) goes with this frame


def _order(table: pa.Table, done: pa.Array) -> np.ndarray:
    """The manifest's rows not done, in a fixed order: largest images first (so no worker is left
    with a big one at the end), then by image_id. Results are committed in this order, so it alone
    decides which face lands in which shard (the key is the image_id, the content: an image moved
    from a loose file into a pack is not done again)."""
    todo = pc.indices_nonzero(pc.invert(pc.is_in(table["image_id"], value_set=done)))
    pixels = pc.multiply(table["width"].cast(pa.int64()), table["height"].cast(pa.int64()))
    keys = pa.table({"pixels": pixels.take(todo), "image_id": table["image_id"].take(todo)})
    order = pc.sort_indices(keys, sort_keys=[("pixels", "descending"), ("image_id", "ascending")])
    return todo.take(order).to_numpy()


def _tasks(table: pa.Table, rows: np.ndarray, images_dir: Path,
           recorded: dict[str, tuple[RecordedFace, ...]]) -> Iterator[ImageTask]:
    """The ImageTasks of the manifest's `rows`, in order, made TASK_BATCH at a time as they are taken."""
    for at in range(0, len(rows), TASK_BATCH):
        part = table.take(pa.array(rows[at:at + TASK_BATCH]))
        columns = (part[c].to_pylist() for c in ("image_id", "pack", "offset", "length"))
        for image_id, pack, offset, length in zip(*columns):
            yield ImageTask(image_id, str((images_dir / pack).resolve()), offset, length, pack,
                            recorded.get(image_id, ()))


def _counts(column: pa.ChunkedArray) -> collections.Counter:
    """How often each non-empty value of a string column occurs (nulls not counted)."""
    counts = pc.value_counts(column.filter(pc.not_equal(column, "")))
    return collections.Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def _count(summary: DetectSummary, faces: pa.Table, images: pa.Table) -> None:
    summary.bad = _counts(images["reason"])
    reasons = faces["drop_reason"]
    summary.faces = faces.num_rows
    summary.kept = reasons.null_count
    summary.dropped = _counts(reasons)
    summary.monochrome = int(pc.sum(faces["monochrome"]).as_py() or 0)
    summary.with_face = pc.count_distinct(faces["image_id"].filter(pc.is_null(reasons))).as_py()
