"""Which faces pass review: the kept faces minus false positives (minus undecided faces when
`review.unreviewed` is drop). A decision applies to its face's whole near-duplicate group
(tasks.artifacts.decisions.applied_decisions). The review stage writes the result as the reviewed
faces (tasks.artifacts.reviewed), the only way the decisions reach tag, train and release.
Columnar: no Python object per face."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc

from tasks.artifacts.decisions import Decision
from tasks.artifacts.faces import FACES_TABLE, FACES_VERSION
from tasks.artifacts.reviewed import FINE, UNREVIEWED
from tasks.errors import DataError
from tasks.fileio import READ_BATCH_ROWS, parquet_file


def reviewed_mask(faces: pa.Table, applied: dict[str, Decision], unreviewed: str) -> tuple[pa.Array, pa.Array]:
    """(which rows of `faces` pass review, the verdict of each that passes: fine or unreviewed);
    `applied`: applied_decisions'. With unreviewed=drop, only faces whose group was checked fine pass."""
    ids = faces["face_id"]
    fine = pc.is_in(ids, value_set=pa.array([f for f, d in applied.items() if not d.false_positive], pa.string()))
    false_positive = pc.is_in(ids, value_set=pa.array([f for f, d in applied.items() if d.false_positive], pa.string()))
    decided = pc.or_(fine, pa.scalar(unreviewed == "keep"))
    mask = pc.and_(pc.and_(pc.is_null(faces["drop_reason"]), pc.invert(false_positive)), decided)
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    verdicts = pc.if_else(pc.filter(fine, mask), pa.scalar(FINE), pa.scalar(UNREVIEWED))
    return mask, verdicts.combine_chunks() if isinstance(verdicts, pa.ChunkedArray) else verdicts


def read_selected(path: str | os.PathLike, mask: pa.Array) -> pa.Table:
    """The rows of faces.parquet at `path` that `mask` (one bool per row) selects, every column: read a
    batch of rows at a time, so only the selected rows are held whole."""
    pf = parquet_file(path, FACES_TABLE, FACES_VERSION)
    try:
        if pf.metadata.num_rows != len(mask):
            raise DataError(f"{path} has {pf.metadata.num_rows} rows, not {len(mask)}: it changed while review ran")
        batches, at = [], 0
        for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS):
            batches.append(batch.filter(mask.slice(at, batch.num_rows)))
            at += batch.num_rows
        return pa.Table.from_batches(batches, schema=pf.schema_arrow)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path} is not a readable Parquet file: {e}") from None
    finally:
        pf.close()
