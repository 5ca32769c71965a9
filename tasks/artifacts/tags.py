"""The Make.Girls.Moe tag layout, defined once, and the tags dataset: the contract between `tag` and
`train` / `release`.

The layout: 13 hair colours (one-hot), 5 hair styles and 6 other tags (independent), 10 eye
colours (one-hot), 34 in all (MGM_TAGS); the generator's conditioning vector follows it.

`tags.parquet` (table "tags"): one row per reviewed-kept face, in face_id order.
- `face_id`, `backend`;
- one float32 probability column per MGM tag, named as in MGM_TAGS (null where the backend cannot say);
- `attributes`: the binarised vector, int8, in MGM_TAGS order: 1 / 0, or -1 where the backend cannot say.
  Hair colour and eye colour are one-hot (argmax); the other tags are thresholded independently.
- optional `raw_top` (top-k tagger tags) and `feature` (4,096-d Illustration2Vec feature).
Metadata: `moeflow.tag_order` (JSON list, = MGM_TAGS), `moeflow.backend`, `moeflow.backend_reason`
(why that backend ran), `moeflow.weights_sha256`, `moeflow.params` (JSON: only what decides the values,
tasks.tag.run.value_params; no speed knob, no path)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.errors import DataError
from tasks.fileio import atomic_open, read_parquet, with_version

HAIR_COLORS = ("blonde", "brown", "black", "blue", "pink", "purple", "green", "red", "silver", "white",
               "orange", "aqua", "grey")
HAIR_STYLES = ("long_hair", "short_hair", "twintails", "drill_hair", "ponytail")
OTHER_TAGS = ("blush", "smile", "open_mouth", "hat", "ribbon", "glasses")
EYE_COLORS = ("blue", "red", "brown", "green", "purple", "yellow", "pink", "aqua", "black", "orange")

MGM_TAGS: tuple[str, ...] = (tuple(f"{c}_hair" for c in HAIR_COLORS) + HAIR_STYLES + OTHER_TAGS
                             + tuple(f"{c}_eyes" for c in EYE_COLORS))
N_TAGS = len(MGM_TAGS)
HAIR_COLOR_SLICE = slice(0, len(HAIR_COLORS))  # one-hot group
INDEPENDENT_SLICE = slice(len(HAIR_COLORS), len(HAIR_COLORS) + len(HAIR_STYLES) + len(OTHER_TAGS))
EYE_COLOR_SLICE = slice(INDEPENDENT_SLICE.stop, N_TAGS)  # one-hot group
ONE_HOT_GROUPS = ((HAIR_COLOR_SLICE.start, HAIR_COLOR_SLICE.stop), (EYE_COLOR_SLICE.start, EYE_COLOR_SLICE.stop))

TAGS_TABLE = "tags"
TAGS_VERSION = 1
ROW_GROUP = 4096  # rows per Parquet row group (fixed: the bytes must not follow the batch size)


def tags_schema(*, raw_top: bool = False, feature: bool = False, metadata: dict[str, str] | None = None) -> pa.Schema:
    fields = [pa.field("face_id", pa.string(), nullable=False), pa.field("backend", pa.string(), nullable=False)]
    fields += [pa.field(t, pa.float32()) for t in MGM_TAGS]
    fields.append(pa.field("attributes", pa.list_(pa.int8(), len(MGM_TAGS)), nullable=False))
    if raw_top:
        fields.append(pa.field("raw_top", pa.list_(pa.struct([("tag", pa.string()), ("prob", pa.float32())]))))
    if feature:
        fields.append(pa.field("feature", pa.list_(pa.float32(), 4096)))
    meta = {"moeflow.tag_order": json.dumps(list(MGM_TAGS)), **(metadata or {})}
    return with_version(pa.schema(fields), TAGS_TABLE, TAGS_VERSION, meta)


def binarize(probs: np.ndarray, cfg) -> np.ndarray:
    """(B, 34) probabilities (NaN = unknown) -> int8 attributes: argmax per colour group, thresholds
    elsewhere (`cfg.threshold_of`, the tag section). The one rule: the tag stage and render use it."""
    att = np.full(probs.shape, -1, np.int8)
    for sl in (HAIR_COLOR_SLICE, EYE_COLOR_SLICE):
        group = probs[:, sl]
        known = ~np.isnan(group).all(1)
        if known.any():
            block = np.zeros((int(known.sum()), group.shape[1]), np.int8)
            block[np.arange(len(block)), np.nanargmax(group[known], 1)] = 1
            sub = att[:, sl]
            sub[known] = block
            att[:, sl] = sub
    for j in range(INDEPENDENT_SLICE.start, INDEPENDENT_SLICE.stop):
        p = probs[:, j]
        att[:, j] = np.where(np.isnan(p), -1, (p >= cfg.threshold_of(MGM_TAGS[j])).astype(np.int8))
    return att


def read_attributes(path: str | os.PathLike) -> tuple[pa.Table, dict[bytes, bytes]]:
    """The face_id and attributes columns (MGM_TAGS order, -1 unknown; no other column is read), and
    the file's metadata (the backend that ran, why, the weights' sha256, the params that decided the
    values)."""
    table = read_parquet(path, TAGS_TABLE, TAGS_VERSION, ["face_id", "attributes"])
    meta = table.schema.metadata or {}
    order = meta.get(b"moeflow.tag_order")
    if order is not None and json.loads(order) != list(MGM_TAGS):
        raise DataError(f"{path}: tag order differs from the 34 Make.Girls.Moe tags (rerun the tag stage)")
    return table, meta


class SortedTagWriter:
    """Parquet rows in face_id order, whatever order the batches come in: each batch goes to an
    Arrow IPC file beside `path`; close() memory-maps it and writes ROW_GROUP rows at a time in
    face_id order, atomically (the spill is removed, also on failure)."""

    def __init__(self, path: str | os.PathLike, schema: pa.Schema):
        self.path, self.schema = Path(path), schema  # the final metadata comes with close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.*.rows.arrow"):  # a killed run's spill
            stale.unlink(missing_ok=True)
        self.spill = self.path.with_name(f".{self.path.name}.{os.getpid()}.rows.arrow")
        self._sink = pa.OSFile(str(self.spill), "wb")
        self._writer = pa.ipc.new_file(self._sink, schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self, metadata: dict[str, str]) -> None:
        self._writer.close()
        self._sink.close()
        schema = self.schema.with_metadata({**(self.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}})
        try:
            with pa.memory_map(str(self.spill)) as src:
                table = pa.ipc.open_file(src).read_all()
                ids = table.column("face_id")
                if pc.count_distinct(ids).as_py() != len(ids):
                    raise ValueError("tag: a face was tagged twice (duplicate face_id in a batch stream)")
                order = pc.sort_indices(table, sort_keys=[("face_id", "ascending")])
                with atomic_open(self.path, "wb") as f, pq.ParquetWriter(f, schema, compression="zstd") as out:
                    for i in range(0, len(order), ROW_GROUP):
                        rows = table.take(order[i:i + ROW_GROUP]).combine_chunks().replace_schema_metadata(schema.metadata)
                        out.write_table(rows, row_group_size=ROW_GROUP)
        finally:
            self.abort()

    def abort(self) -> None:
        if not self._sink.closed:
            self._writer.close()
            self._sink.close()
        self.spill.unlink(missing_ok=True)
