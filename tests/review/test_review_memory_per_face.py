"""The review stage's selection, statistics and decision groups are columnar (issue: every stage's peak
memory a fixed cache, not a function of N): Python holds objects for the decided faces and their
duplicate chains, never one per face. Python's peak allocation (tracemalloc; Arrow's buffers are not
Python's) over 4N faces against N, with the same decisions, must grow by far less than a str or a dict
entry per face (~100 B; the per-face lists and dicts this replaced cost ~1 KB a face)."""

from __future__ import annotations

import gc
import hashlib
import tracemalloc

import pyarrow as pa
import pyarrow.compute as pc

from tasks.artifacts.decisions import Decision, applied_decisions
from tasks.review.selection import reviewed_mask
from tasks.review.stats import compute_stats

SMALL, LARGE = 5_000, 20_000
DECIDED = 200  # the same decisions at both sizes
BYTES_PER_FACE = 16


def _faces(n: int) -> pa.Table:
    """n faces, every 10th a near-duplicate of the kept face before it, two detectors."""
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    dup = [ids[i - 1] if i % 10 == 9 else None for i in range(n)]
    return pa.table({"face_id": pa.array(ids, pa.string()),
                     "detector": pa.array([("lbpcascade", "animeface")[i % 2] for i in range(n)], pa.string()),
                     "duplicate_of": pa.array(dup, pa.string()),
                     "drop_reason": pa.array(["duplicate" if d else None for d in dup], pa.string())})


def _decisions(faces: pa.Table) -> dict[str, Decision]:
    """DECIDED verdicts among the first faces (a third false positives, some on duplicates), and one
    on a face that no longer exists."""
    ids = faces["face_id"].slice(0, DECIDED).to_pylist()
    out = {f: Decision(face_id=f, false_positive=k % 3 == 0, line=k + 2) for k, f in enumerate(ids)}
    gone = hashlib.sha256(b"gone").hexdigest()
    out[gone] = Decision(face_id=gone, false_positive=True, line=len(ids) + 2)
    return out


def _peak(faces: pa.Table, decisions: dict[str, Decision]) -> tuple[int, dict]:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        applied = applied_decisions(faces, decisions)
        mask, verdicts = reviewed_mask(faces, applied, "keep")
        stats = compute_stats(faces, decisions, "keep", applied)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, {"applied": len(applied), "reviewed": pc.sum(mask).as_py(), "verdicts": len(verdicts),
                  "stats": stats.as_dict()}


def test_review_selection_and_stats_hold_no_python_object_per_face():
    peaks, seen = {}, {}
    for n in (SMALL, LARGE):
        faces = _faces(n)
        peaks[n], seen[n] = _peak(faces, _decisions(faces))
    small, large = seen[SMALL], seen[LARGE]
    assert small["applied"] == large["applied"] > 0
    assert large["reviewed"] == large["verdicts"] > small["reviewed"]
    assert large["stats"]["orphaned_decisions"] == 1 and large["stats"]["decided_via_duplicates"] > 0
    growth = (peaks[LARGE] - peaks[SMALL]) / (LARGE - SMALL)
    assert growth < BYTES_PER_FACE, (peaks, growth)
