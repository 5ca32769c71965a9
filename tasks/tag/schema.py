"""The tags dataset: the contract between `tag` and `train` / `render`.

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

import numpy as np
import pyarrow as pa

from tasks.fileio import with_version

from models.tags import (EYE_COLOR_SLICE, EYE_COLORS, HAIR_COLOR_SLICE, HAIR_COLORS, HAIR_STYLES,  # noqa: F401
                         INDEPENDENT_SLICE, MGM_TAGS, OTHER_TAGS)

TAGS_TABLE = "tags"
TAGS_VERSION = 1


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
