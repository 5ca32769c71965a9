"""The one function later stages take their faces from: `reviewed_faces(params)`, the kept
faces minus false positives (minus undecided faces when `review.unreviewed` is drop), after
validating the decisions CSV. A decision applies to its face's whole near-duplicate group
(tasks.review.groups). Light on purpose: tag and train import only this, not the queue export."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from tasks.detect.dataset import read_faces
from tasks.errors import ReviewError
from tasks.review.csvio import DECISION_COLUMNS, CsvTable, Decision, read_decisions
from tasks.review.groups import applied_decisions

log = logging.getLogger(__name__)


def load_decisions(decisions_csv: str) -> tuple[CsvTable, dict[str, Decision]]:
    """Read and validate the decisions CSV (a missing file is an error: it is git-tracked)."""
    path = Path(decisions_csv)
    if not path.exists():
        raise ReviewError(f"{path}: file not found; it is git-tracked and starts as the header line "
                          f"{','.join(DECISION_COLUMNS)}")
    return read_decisions(path)


def select_reviewed(faces: pa.Table, decisions: dict[str, Decision], unreviewed: str) -> pa.Table:
    """Kept faces without a false-positive verdict on their group; with unreviewed=drop, only
    faces whose group was checked fine."""
    applied = applied_decisions(faces, decisions)
    mask = []
    for fid, drop in zip(faces.column("face_id").to_pylist(), faces.column("drop_reason").to_pylist()):
        d = applied.get(fid)
        mask.append(drop is None and (not d.false_positive if d is not None else unreviewed == "keep"))
    return faces.filter(pa.array(mask, pa.bool_()))


def reviewed_faces(params) -> pa.Table:
    """THE reviewed face set for later stages (rows of faces.parquet, same schema).

    Honours `review.unreviewed` and the false positives in `review.decisions`, which it
    validates: a malformed CSV raises ReviewError. Stages that call this must list
    ${review.decisions} among their DVC deps."""
    unreviewed = params.review.unreviewed
    faces = read_faces(params.detect.out.faces)
    _, decisions = load_decisions(params.review.decisions)
    out = select_reviewed(faces, decisions, unreviewed)
    log.info("review: %d of %d detected faces pass review (unreviewed: %s)", out.num_rows, faces.num_rows, unreviewed)
    return out
