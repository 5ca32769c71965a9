"""Verdicts follow near-duplicate groups.

detect keeps one face of each group of near-duplicates and points the others at it
(`duplicate_of`). Which member is kept can change when images are added (a larger copy
arrives), so a verdict recorded on the face kept then must still apply once another member
is kept: the decision that applies to a kept face is taken from its whole group (itself and
every face whose `duplicate_of` chain leads to it). A false positive on any member wins;
otherwise a fine verdict on any member applies; the kept face's own decision comes first."""

from __future__ import annotations

import pyarrow as pa

from tasks.review.csvio import Decision


def group_members(faces: pa.Table) -> dict[str, list[str]]:
    """kept face_id -> its group, itself first, then the duplicates by face_id."""
    ids = faces.column("face_id").to_pylist()
    dup_of = dict(zip(ids, faces.column("duplicate_of").to_pylist()))
    kept = [f for f, r in zip(ids, faces.column("drop_reason").to_pylist()) if r is None]
    groups: dict[str, list[str]] = {f: [f] for f in kept}
    for fid in sorted(ids):
        root, seen = dup_of.get(fid), {fid}
        while root is not None and root not in groups and root not in seen:  # follow a chain, never loop
            seen.add(root)
            root = dup_of.get(root)
        if root in groups and root != fid:
            groups[root].append(fid)
    return groups


def applied_decisions(faces: pa.Table, decisions: dict[str, Decision]) -> dict[str, Decision]:
    """kept face_id -> the decision that applies to it (its own, or one on a group member)."""
    out: dict[str, Decision] = {}
    for kept, members in group_members(faces).items():
        found = [decisions[m] for m in members if m in decisions]
        if found:
            out[kept] = next((d for d in found if d.false_positive), found[0])
    return out
