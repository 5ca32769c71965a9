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

import pyarrow as pa

from tasks.fileio import with_version

HAIR_COLORS = ("blonde", "brown", "black", "blue", "pink", "purple", "green", "red", "silver", "white",
               "orange", "aqua", "grey")
HAIR_STYLES = ("long_hair", "short_hair", "twintails", "drill_hair", "ponytail")
OTHER_TAGS = ("blush", "smile", "open_mouth", "hat", "ribbon", "glasses")
EYE_COLORS = ("blue", "red", "brown", "green", "purple", "yellow", "pink", "aqua", "black", "orange")

MGM_TAGS: tuple[str, ...] = (tuple(f"{c}_hair" for c in HAIR_COLORS) + HAIR_STYLES + OTHER_TAGS
                             + tuple(f"{c}_eyes" for c in EYE_COLORS))
assert len(MGM_TAGS) == 34
HAIR_COLOR_SLICE = slice(0, len(HAIR_COLORS))  # one-hot group
INDEPENDENT_SLICE = slice(len(HAIR_COLORS), len(HAIR_COLORS) + len(HAIR_STYLES) + len(OTHER_TAGS))
EYE_COLOR_SLICE = slice(INDEPENDENT_SLICE.stop, len(MGM_TAGS))  # one-hot group

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
