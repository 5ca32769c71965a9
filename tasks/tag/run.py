"""The tag stage: reviewed faces → data/tags/tags.parquet (+ summary.json).

`run_tag(params)` tags the faces `tasks.review.run.reviewed_faces` keeps, with the backend
`tag.backend` names (or the best one present, for auto), streams the rows to Parquet in
batches (memory bounded by one batch) and summarises the tag frequencies next to
Make.Girls.Moe's."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from tasks.config import to_dict
from tasks.fileio import atomic_open, atomic_write_json
from tasks.tag.backends import BACKENDS, TagBatch, choose_backend
from tasks.tag.config import TagConfig
from tasks.tag.schema import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, INDEPENDENT_SLICE, MGM_TAGS, tags_schema

log = logging.getLogger(__name__)

# Tag frequencies Make.Girls.Moe reports for its training faces (arXiv 1708.05509); only these
# are recorded here, the others show as n/a.
MGM_PUBLISHED = {"long_hair": 0.53, "blue_eyes": 0.28, "glasses": 0.05}


def binarize(probs: np.ndarray, cfg: TagConfig) -> np.ndarray:
    """(B, 34) probabilities (NaN = unknown) → int8 attributes: argmax per colour group, thresholds elsewhere."""
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


def batch_table(batch: TagBatch, backend: str, cfg: TagConfig, schema: pa.Schema) -> pa.Table:
    n = len(batch.face_ids)
    cols: dict[str, pa.Array] = {"face_id": pa.array(batch.face_ids, pa.string()),
                                 "backend": pa.array([backend] * n, pa.string())}
    for j, tag in enumerate(MGM_TAGS):
        p = batch.probs[:, j].astype(np.float32)
        cols[tag] = pa.array(p, pa.float32(), mask=np.isnan(p))
    att = binarize(batch.probs, cfg)
    cols["attributes"] = pa.FixedSizeListArray.from_arrays(pa.array(att.ravel(), pa.int8()), len(MGM_TAGS))
    if cfg.raw_top_k > 0:
        cols["raw_top"] = pa.array(
            [None if batch.raw_top is None else [{"tag": t, "prob": p} for t, p in batch.raw_top[i]] for i in range(n)],
            schema.field("raw_top").type)
    if cfg.feature:
        if batch.feature is None:
            cols["feature"] = pa.nulls(n, schema.field("feature").type)
        else:
            if batch.feature.shape[1] != schema.field("feature").type.list_size:
                raise ValueError(f"feature has {batch.feature.shape[1]} dimensions, the schema {schema.field('feature').type.list_size}")
            flat = pa.array(batch.feature.astype(np.float32).ravel(), pa.float32())
            cols["feature"] = pa.FixedSizeListArray.from_arrays(flat, batch.feature.shape[1])
    return pa.table(cols, schema=schema)


@dataclass
class TagSummary:
    backend: str = ""
    reason: str = ""
    weights_sha256: str | None = None
    faces_in: int = 0
    tagged: int = 0
    seconds: float = 0.0
    positive: Counter = field(default_factory=Counter)
    known: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def add(self, att: np.ndarray) -> None:
        self.tagged += len(att)
        for j, tag in enumerate(MGM_TAGS):
            self.positive[tag] += int((att[:, j] == 1).sum())
            self.known[tag] += int((att[:, j] != -1).sum())

    def frequency(self, tag: str) -> float | None:
        return self.positive[tag] / self.known[tag] if self.known[tag] else None

    def to_json(self) -> dict:
        return {"backend": self.backend, "reason": self.reason, "weights_sha256": self.weights_sha256,
                "faces_in": self.faces_in, "tagged": self.tagged, "faces_per_second": round(self.tagged / self.seconds, 2) if self.seconds else None,
                "frequency": {t: (round(f, 4) if (f := self.frequency(t)) is not None else None) for t in MGM_TAGS},
                "coverage": {t: round(self.known[t] / self.tagged, 4) if self.tagged else 0.0 for t in MGM_TAGS},
                "mgm_published": MGM_PUBLISHED, "notes": self.notes}

    def lines(self) -> list[str]:
        out = [f"backend {self.backend} ({self.reason}); {self.tagged} of {self.faces_in} reviewed faces tagged"
               + (f" at {self.tagged / self.seconds:.1f} faces/s" if self.seconds else "")]
        out += self.notes
        for tag in MGM_TAGS:
            f = self.frequency(tag)
            mgm = MGM_PUBLISHED.get(tag)
            out.append(f"{tag:<14} {'n/a' if f is None else f'{f:.3f}':>6}  (MGM {'n/a' if mgm is None else f'{mgm:.2f}'})"
                       f"  known for {self.known[tag]}")
        return out

    def markdown(self) -> str:
        rows = ["| tag | frequency | MGM | faces known |", "|---|---:|---:|---:|"]
        for tag in MGM_TAGS:
            f, mgm = self.frequency(tag), MGM_PUBLISHED.get(tag)
            rows.append(f"| {tag} | {'n/a' if f is None else f'{f:.3f}'} | {'n/a' if mgm is None else f'{mgm:.2f}'} | {self.known[tag]} |")
        head = f"**tag**: backend `{self.backend}` ({self.reason}); {self.tagged} of {self.faces_in} reviewed faces tagged.\n\n"
        return head + "".join(f"- {n}\n" for n in self.notes) + "\n" + "\n".join(rows) + "\n"


def tag_faces(cfg: TagConfig, faces: pa.Table, crops_dir: str) -> TagSummary:
    """Tag `faces` (rows of faces.parquet) and write cfg.out.tags and cfg.out.summary."""
    name, reason = choose_backend(cfg)
    log.info("tag: backend %s (%s)%s", name, reason, " on dask" if cfg.runner == "dask" else "")
    if cfg.runner == "dask":  # same backend and batches, in chunks on the workers; rows in the local order
        from tasks.tag.dask_runner import DaskTagger

        backend = DaskTagger(cfg, name)
    else:
        backend = BACKENDS[name](cfg)
    summary = TagSummary(backend=name, reason=reason, weights_sha256=backend.weights_sha256, faces_in=faces.num_rows)
    if cfg.feature and name != "i2v":
        summary.notes.append(f"tag.feature is set but the {name} backend has no Illustration2Vec feature: column left null")
    meta = {"moeflow.backend": name, "moeflow.weights_sha256": backend.weights_sha256 or "",
            "moeflow.params": json.dumps(to_dict(cfg), sort_keys=True)}
    schema = tags_schema(raw_top=cfg.raw_top_k > 0, feature=cfg.feature, metadata=meta)
    t0 = time.perf_counter()
    with atomic_open(cfg.out.tags, "wb") as f, pq.ParquetWriter(f, schema, compression="zstd") as writer, \
            tqdm(total=faces.num_rows, desc="tag", unit="face", disable=None) as bar:
        for batch in backend.batches(faces, crops_dir):
            table = batch_table(batch, name, cfg, schema)
            writer.write_table(table)
            summary.add(binarize(batch.probs, cfg))
            bar.update(len(batch.face_ids))
    summary.seconds = time.perf_counter() - t0
    if summary.tagged < faces.num_rows:
        summary.notes.append(f"{faces.num_rows - summary.tagged} reviewed faces have no stored crop and were not tagged")
    if name == "color":
        measured = getattr(backend, "measured", 0)
        unknown = summary.tagged - summary.known["blonde_hair"]
        summary.notes.append(f"color: hair/eye colour known for {summary.known['blonde_hair']} faces "
                             f"({measured} measured on the crop with animeface), unknown (-1) for {unknown}; "
                             "styles, blush, smile, open mouth, hat, ribbon, glasses are null without a tagger")
    atomic_write_json(cfg.out.summary, summary.to_json())
    return summary


def run_tag(params) -> TagSummary:
    """The stage: the faces the review stage keeps, tagged."""
    from tasks.review.selection import reviewed_faces

    faces = reviewed_faces(params)
    return tag_faces(params.tag, faces, params.detect.out.crops)
