"""Review statistics: reviewed / pending / false-positive rate per detector."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from tasks.artifacts.decisions import Decision


@dataclass
class DetectorStats:
    kept: int = 0
    reviewed: int = 0
    false_positive: int = 0

    @property
    def pending(self) -> int:
        return self.kept - self.reviewed

    @property
    def fp_rate(self) -> float | None:
        return round(self.false_positive / self.reviewed, 4) if self.reviewed else None

    def as_dict(self) -> dict:
        return {"kept": self.kept, "reviewed": self.reviewed, "pending": self.pending,
                "false_positive": self.false_positive, "fp_rate": self.fp_rate}


@dataclass
class ReviewStats:
    unreviewed: str
    detectors: dict[str, DetectorStats] = field(default_factory=dict)
    downstream: int = 0  # faces passed to later stages
    on_dropped: int = 0  # decisions on faces detect dropped (duplicates, ...): kept in the CSV
    via_duplicates: int = 0  # kept faces decided by a verdict on another member of their duplicate group
    orphaned: list[dict] = field(default_factory=list)  # decisions whose face no longer exists
    queued: int = 0
    pages: int = 0
    version: str = ""  # the queue's version (thumbs/<version>/)

    @property
    def total(self) -> DetectorStats:
        t = DetectorStats()
        for d in self.detectors.values():
            t.kept += d.kept
            t.reviewed += d.reviewed
            t.false_positive += d.false_positive
        return t

    def as_dict(self) -> dict:
        return {"unreviewed": self.unreviewed, "total": self.total.as_dict(),
                "detectors": {k: v.as_dict() for k, v in sorted(self.detectors.items())},
                "downstream": self.downstream, "queued": self.queued, "pages": self.pages,
                "queue_version": self.version, "decisions_on_dropped_faces": self.on_dropped,
                "decided_via_duplicates": self.via_duplicates,
                "orphaned_decisions": len(self.orphaned), "orphaned": self.orphaned}

    def metrics(self) -> dict:
        """The headline numbers (review.out.metrics, the DVC metric); per detector: as_dict()."""
        t = self.total
        return {"faces": self.downstream, "reviewed": t.reviewed, "pending": t.pending, "fp_rate": t.fp_rate}

    def lines(self) -> list[str]:
        def fmt(name: str, d: DetectorStats) -> str:
            rate = "n/a" if d.fp_rate is None else f"{d.fp_rate:.1%}"
            return (f"{name}: {d.kept} kept faces, {d.reviewed} reviewed, {d.pending} pending, "
                    f"{d.false_positive} false positives ({rate} of reviewed)")
        out = [fmt(k, v) for k, v in sorted(self.detectors.items())] + [fmt("all detectors", self.total)]
        out.append(f"passed downstream: {self.downstream} faces (unreviewed faces: {self.unreviewed})")
        if self.on_dropped:
            out.append(f"{self.on_dropped} decisions concern faces detect dropped (kept in the CSV; "
                       "one on a duplicate applies to its group's kept face)")
        if self.via_duplicates:
            out.append(f"{self.via_duplicates} kept faces are decided by a verdict on a near-duplicate of theirs")
        if self.orphaned:
            first = ", ".join(f"{o['face_id'][:12]}… (line {o['line']})" for o in self.orphaned[:3])
            out.append(f"{len(self.orphaned)} decisions name faces that no longer exist: kept in the CSV, "
                       f"listed in the stats file ({first})")
        return out

    def markdown(self) -> str:
        rows = []
        for name, d in [*sorted(self.detectors.items()), ("**all**", self.total)]:
            rate = "n/a" if d.fp_rate is None else f"{d.fp_rate:.1%}"
            rows.append(f"| {name} | {d.kept} | {d.reviewed} | {d.pending} | {d.false_positive} | {rate} |")
        notes = [f"Passed downstream: **{self.downstream}** faces (unreviewed faces: `{self.unreviewed}`).",
                 f"Queue: {self.queued} faces on {self.pages} pages."]
        if self.on_dropped:
            notes.append(f"{self.on_dropped} decisions concern faces detect dropped (kept in the CSV).")
        if self.via_duplicates:
            notes.append(f"{self.via_duplicates} kept faces are decided by a verdict on a near-duplicate.")
        if self.orphaned:
            notes.append(f"**{len(self.orphaned)} decisions name faces that no longer exist** (kept in the CSV).")
        return ("# review\n\n| detector | kept | reviewed | pending | false positives | FP rate |\n"
                "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + "\n\n".join(notes) + "\n")


def compute_stats(faces: pa.Table, decisions: dict[str, Decision], unreviewed: str,
                  applied: dict[str, Decision]) -> ReviewStats:
    """Counts over kept faces, each with the decision that applies to it (its duplicate group's:
    `applied`, applied_decisions'). Columnar: Python objects for the decided faces and the
    detectors only, none per face."""
    stats = ReviewStats(unreviewed=unreviewed)
    kept = pc.is_null(faces["drop_reason"])
    detectors = faces["detector"].filter(kept)
    for count in pc.value_counts(detectors).to_pylist():  # in the order detectors first appear
        stats.detectors[count["values"]] = DetectorStats(kept=count["counts"])
    decided = pa.array(list(decisions), pa.string())
    on_dropped = pc.is_in(faces["face_id"].filter(pc.invert(kept)), value_set=decided)
    stats.on_dropped = pc.sum(on_dropped.cast(pa.int64())).as_py() or 0
    mine = faces.select(["face_id", "detector"]).filter(
        pc.and_(kept, pc.is_in(faces["face_id"], value_set=pa.array(list(applied), pa.string()))))
    for fid, det in zip(mine["face_id"].to_pylist(), mine["detector"].to_pylist()):
        s, d = stats.detectors[det], applied[fid]
        s.reviewed += 1
        s.false_positive += d.false_positive
        stats.downstream += not d.false_positive
        stats.via_duplicates += d.face_id != fid
    if unreviewed == "keep":
        stats.downstream += len(detectors) - mine.num_rows
    present = set(faces["face_id"].filter(pc.is_in(faces["face_id"], value_set=decided)).to_pylist())
    stats.orphaned = [{"face_id": d.face_id, "false_positive": int(d.false_positive), "line": d.line}
                      for d in sorted(decisions.values(), key=lambda d: d.line) if d.face_id not in present]
    return stats
