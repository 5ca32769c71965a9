"""The review stage, the reviewer's merge, and the one function downstream stages use.

- `run_review`: validate the decisions CSV, export the queue of undecided kept faces
  (queue.csv, queue.html, sprite pages) and the statistics. Writes nothing on any error.
- `merge`: append the filled-in verdicts of the queue to the decisions CSV, keeping every
  existing line byte for byte; refuses unknown faces and conflicting verdicts.
- `reviewed_faces`: the kept faces minus false positives (minus undecided faces when
  `review.unreviewed` is drop), after validating the decisions CSV."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from tasks.detect.dataset import kept_mask, read_faces
from tasks.errors import ReviewError
from tasks.fileio import atomic_write_json
from tasks.review.config import ReviewConfig
from tasks.review.csvio import (DECISION_COLUMNS, QUEUE_COLUMNS, CsvTable, Decision, append_decisions,
                                decisions_of, read_csv, read_decisions)
from tasks.review.export import export_queue, load_urls, queue_rows
from tasks.review.stats import ReviewStats, compute_stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewInputs:
    """Where the stage reads faces (detect's outputs) and source urls (scrape's manifest)."""

    faces: str
    crops: str
    manifest: str | None = None


def inputs_from(params) -> ReviewInputs:
    return ReviewInputs(faces=params.detect.out.faces, crops=params.detect.out.crops,
                        manifest=params.scrape.out.manifest)


def load_decisions(cfg: ReviewConfig) -> tuple[CsvTable, dict[str, Decision]]:
    """Read and validate the decisions CSV (a missing file is an error: it is git-tracked)."""
    path = Path(cfg.decisions)
    if not path.exists():
        raise ReviewError(f"{path}: file not found; it is git-tracked and starts as the header line "
                          f"{','.join(DECISION_COLUMNS)}")
    return read_decisions(path)


def select_reviewed(faces: pa.Table, decisions: dict[str, Decision], unreviewed: str) -> pa.Table:
    """Kept faces without a false-positive verdict; with unreviewed=drop, only faces checked fine."""
    mask = []
    for fid, drop in zip(faces.column("face_id").to_pylist(), faces.column("drop_reason").to_pylist()):
        d = decisions.get(fid)
        mask.append(drop is None and (not d.false_positive if d is not None else unreviewed == "keep"))
    return faces.filter(pa.array(mask, pa.bool_()))


def reviewed_faces(params) -> pa.Table:
    """THE reviewed face set for later stages (rows of faces.parquet, same schema).

    Honours `review.unreviewed` and the false positives in `review.decisions`, which it
    validates: a malformed CSV raises ReviewError. Stages that call this must list
    ${review.decisions} among their DVC deps."""
    cfg: ReviewConfig = params.review
    faces = read_faces(params.detect.out.faces)
    _, decisions = load_decisions(cfg)
    out = select_reviewed(faces, decisions, cfg.unreviewed)
    log.info("review: %d of %d detected faces pass review (unreviewed: %s)", out.num_rows, faces.num_rows, cfg.unreviewed)
    return out


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
    faces = read_faces(inputs.faces)
    _, decisions = load_decisions(cfg)
    waiting = unmerged(cfg.out.queue, decisions)
    if waiting:
        raise ReviewError(f"{cfg.out.queue}: {len(waiting)} verdicts (first at line {waiting[0].line}) are not in "
                          f"{cfg.decisions} yet and would be overwritten: run `python -m flows.review merge` "
                          "first (or clear them)")
    kept = faces.filter(pa.array(kept_mask(faces), pa.bool_()))
    stats = compute_stats(faces, decisions, cfg.unreviewed)
    rows = queue_rows(kept, decisions, load_urls(inputs.manifest))
    stats.queued = len(rows)
    stats.pages = export_queue(cfg, rows, kept, inputs.crops)
    atomic_write_json(cfg.out.stats, stats.as_dict())
    return stats


@dataclass
class MergeResult:
    source: str
    target: str
    added: int = 0
    added_fp: int = 0
    already: int = 0
    undecided: int = 0
    skipped_missing: int = 0

    def message(self) -> str:
        skipped = (f"; skipped {self.skipped_missing} verdicts on faces no longer in the faces dataset"
                   if self.skipped_missing else "")
        return self._message() + skipped

    def _message(self) -> str:
        if not self.added:
            return (f"nothing new to merge from {self.source} ({self.already} verdicts already recorded, "
                    f"{self.undecided} rows undecided)")
        return (f"merged {self.added} verdicts ({self.added_fp} false positives) into {self.target}; "
                f"{self.already} already recorded, {self.undecided} rows still undecided. "
                "Run `dvc repro` to refresh the queue, and commit the CSV.")


def merge(cfg: ReviewConfig, inputs: ReviewInputs, source: str | os.PathLike | None = None,
          reviewer: str = "", drop_missing: bool = False) -> MergeResult:
    """Append the filled-in verdicts of `source` (default: the queue) to the decisions CSV.

    Every existing line is kept; a verdict that contradicts a recorded one, a face_id that is
    not in faces.parquet (unless `drop_missing`: then it is skipped and counted), or any
    malformed cell is an error and nothing is written."""
    src = Path(source or cfg.out.queue)
    target = Path(cfg.decisions)
    if not src.exists():
        raise ReviewError(f"{src}: file not found" + ("" if source else " (export the queue first: `dvc repro review`)"))
    table = read_csv(src, QUEUE_COLUMNS)
    new = decisions_of(table)
    existing_table, existing = read_decisions(target) if target.exists() else (None, {})
    known = set(read_faces(inputs.faces).column("face_id").to_pylist())
    result = MergeResult(source=str(src), target=str(target))
    result.undecided = sum(1 for _, v in table.rows if v.get("face_id", "").strip().lower() not in new)
    to_add = []
    ordered = sorted(new.values(), key=lambda d: d.line)
    missing = [d for d in ordered if d.face_id not in known]
    if missing and not drop_missing:
        d = missing[0]
        more = f" (and {len(missing) - 1} more rows like it)" if len(missing) > 1 else ""
        raise ReviewError(f"{src}: line {d.line}: face_id {d.face_id} is not in {inputs.faces}{more}: a mistyped id, or "
                          "a queue older than the last detect run; clear those verdicts, or merge with --drop-missing "
                          "to skip them")
    result.skipped_missing = len(missing)
    for d in ordered:
        if d.face_id not in known:
            continue
        old = existing.get(d.face_id)
        if old is not None:
            if old.false_positive != d.false_positive:
                raise ReviewError(f"{src}: line {d.line}: face_id {d.face_id} has false_positive={int(d.false_positive)} "
                                  f"but {target} line {old.line} records {int(old.false_positive)}; a recorded decision "
                                  f"is changed only by editing {target} by hand")
            result.already += 1
            continue
        to_add.append(replace(d, reviewer=d.reviewer or reviewer))
    if to_add:
        append_decisions(target, existing_table, to_add)
    result.added = len(to_add)
    result.added_fp = sum(d.false_positive for d in to_add)
    log.info("review: %s", result.message())
    return result
