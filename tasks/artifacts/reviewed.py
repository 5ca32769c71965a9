"""The reviewed faces (`review.out.faces`, table "reviewed_faces"): what the review stage passes on
to tag, train and release. The rows of faces.parquet (same columns) of every kept face whose
near-duplicate group has no false-positive verdict (and, with `review.unreviewed: drop`, that was
checked fine), in face_id order, each with the verdict that applied: `fine` (checked) or
`unreviewed` (passed without a decision). The reviewer's decisions reach the model only through
this file, so a stage after review reruns exactly when the decisions change what it sees."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc

from tasks.artifacts.faces import FACES_SCHEMA
from tasks.fileio import read_parquet, with_version, write_parquet

REVIEWED_TABLE = "reviewed_faces"
REVIEWED_VERSION = 1
FINE, UNREVIEWED = "fine", "unreviewed"
VERDICTS = (FINE, UNREVIEWED)  # false positives never pass
REVIEWED_SCHEMA = with_version(pa.schema([*FACES_SCHEMA, pa.field("verdict", pa.string(), nullable=False)]),
                               REVIEWED_TABLE, REVIEWED_VERSION)


def write_reviewed(path: str | os.PathLike, faces: pa.Table, verdicts: list[str] | pa.Array) -> pa.Table:
    """`faces` (rows of faces.parquet) with their verdicts (a list or an Arrow string array), in face_id order."""
    verdicts = verdicts if isinstance(verdicts, pa.Array) else pa.array(verdicts, pa.string())
    bad = sorted(set(pc.unique(verdicts).to_pylist()) - set(VERDICTS), key=str)
    if bad:
        raise ValueError(f"not a verdict of a reviewed face: {bad[0]!r}")
    table = faces.select(FACES_SCHEMA.names).append_column(REVIEWED_SCHEMA.field("verdict"), verdicts)
    return write_parquet(path, table.sort_by("face_id"), REVIEWED_SCHEMA)


def read_reviewed(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """The reviewed faces (or only the named columns: the others are not read)."""
    return read_parquet(path, REVIEWED_TABLE, REVIEWED_VERSION, columns)
