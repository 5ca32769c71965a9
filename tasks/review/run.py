"""The review stage: validate the decisions CSV, write the reviewed faces (what tag, train and
release take: tasks.artifacts.reviewed), export the queue of undecided kept faces (queue.csv,
queue.html, sprite pages) and the statistics. Writes nothing on any error, and holds the decisions
lock while it runs (tasks.review.lock). The reviewer's `merge` lives in tasks.review.merge."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc

from tasks.artifacts.decisions import QUEUE_COLUMNS, Decision, applied_decisions, decisions_of, load_decisions, read_csv
from tasks.artifacts.faces import read_faces
from tasks.artifacts.reviewed import write_reviewed
from tasks.errors import ReviewError
from tasks.fileio import atomic_write_json
from tasks.params.review import ReviewConfig
from tasks.review.lock import decisions_lock
from tasks.review.queue import export_queue, queue_rows
from tasks.review.selection import read_selected, reviewed_mask
from tasks.review.stats import ReviewStats, compute_stats

log = logging.getLogger(__name__)
MERGE_COMMAND = "python -m tasks.review merge"
# the columns of faces.parquet the stage works from; the reviewed faces' other columns are read at the
# end, for those faces only (tasks.review.selection.read_selected)
COLUMNS = ["face_id", "image_id", "detector", "score", "shard", "duplicate_of", "drop_reason"]


@dataclass(frozen=True)
class ReviewInputs:
    """Where the stage reads faces (detect's outputs) and source urls (scrape's manifest): the paths
    dvc.yaml hands it."""

    faces: str
    crops: str
    manifest: str | None = None


def unmerged(queue_path: str | os.PathLike, decisions: dict[str, Decision]) -> list[Decision]:
    """Verdicts typed into the queue that the decisions CSV does not hold (yet)."""
    if not Path(queue_path).exists():
        return []
    queued = decisions_of(read_csv(queue_path, QUEUE_COLUMNS))
    return sorted((d for d in queued.values()
                   if d.face_id not in decisions or decisions[d.face_id].false_positive != d.false_positive),
                  key=lambda d: d.line)


def run_review(cfg: ReviewConfig, inputs: ReviewInputs) -> ReviewStats:
    """The stage: validate, then export. Any error leaves every file as it was."""
    with decisions_lock(cfg.decisions, "the review stage"):
        faces = read_faces(inputs.faces, COLUMNS)
        _, decisions = load_decisions(cfg.decisions)
        waiting = unmerged(cfg.out.queue, decisions)
        if waiting:
            raise ReviewError(f"{cfg.out.queue}: {len(waiting)} verdicts (first at line {waiting[0].line}) are not in "
                              f"{cfg.decisions} yet and would be overwritten: run `{MERGE_COMMAND}` first "
                              "(or clear them)")
        detected = faces.num_rows
        kept = faces.filter(pc.is_null(faces["drop_reason"]))
        applied = applied_decisions(faces, decisions)
        passes, verdicts = reviewed_mask(faces, applied, cfg.unreviewed)
        stats = compute_stats(faces, decisions, cfg.unreviewed, applied)
        del faces
        rows = queue_rows(kept, applied, inputs.manifest)
        stats.queued = rows.num_rows
        export = export_queue(cfg, rows, inputs.crops)
        stats.pages, stats.version = export.pages, export.version
        del rows, kept
        reviewed = read_selected(inputs.faces, passes)
        write_reviewed(cfg.out.faces, reviewed, verdicts)
        log.info("review: %d of %d detected faces pass review (unreviewed: %s)", reviewed.num_rows, detected,
                 cfg.unreviewed)
        atomic_write_json(cfg.out.stats, stats.as_dict())
        atomic_write_json(cfg.out.metrics, stats.metrics())
    if stats.queued:
        log.info("review: to save over %s from a spreadsheet after `dvc repro` or `dvc pull`, run "
                 "`python -m tasks.review edit` first (DVC links it read-only into its cache)", cfg.out.queue)
    return stats
