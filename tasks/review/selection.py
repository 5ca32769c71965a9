"""Which faces pass review: the kept faces minus false positives (minus undecided faces when
`review.unreviewed` is drop). A decision applies to its face's whole near-duplicate group
(tasks.artifacts.decisions.applied_decisions). The review stage writes the result as the reviewed
faces (tasks.artifacts.reviewed), the only way the decisions reach tag, train and release."""

from __future__ import annotations

import pyarrow as pa

from tasks.artifacts.decisions import Decision, applied_decisions
from tasks.artifacts.reviewed import FINE, UNREVIEWED


def select_reviewed(faces: pa.Table, decisions: dict[str, Decision], unreviewed: str) -> tuple[pa.Table, list[str]]:
    """(the kept faces without a false-positive verdict on their group, each one's verdict: fine or
    unreviewed); with unreviewed=drop, only faces whose group was checked fine."""
    applied = applied_decisions(faces, decisions)
    mask, verdicts = [], []
    for fid, drop in zip(faces.column("face_id").to_pylist(), faces.column("drop_reason").to_pylist()):
        d = applied.get(fid)
        passes = drop is None and (not d.false_positive if d is not None else unreviewed == "keep")
        mask.append(passes)
        if passes:
            verdicts.append(FINE if d is not None else UNREVIEWED)
    return faces.filter(pa.array(mask, pa.bool_())), verdicts
