"""The tag stage: reviewed faces → data/tags/tags.parquet (+ tagger.json, summary.json).

`run_tag(cfg, faces, crops)` tags the reviewed faces (the review stage's tasks.artifacts.reviewed), with the backend
`tag.backend` names (or, for auto, the one tasks.taggers.choice picks and says why), and writes
the rows in face_id order: the same inputs give the same bytes whatever the workers, threads,
batch size or runner. Batches are spilled to an Arrow file beside the output as they come
(memory bounded by a batch), then written to Parquet in face_id order in fixed row groups.
tags.parquet's metadata holds what decides the values (backend, why, weights sha256, the
params that change tags), never a speed knob or a machine path; the timings go to the log and
the untracked run report reports/runs/tag.json."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from tasks.artifacts.reviewed import read_reviewed
from tasks.artifacts.tagger import write_tagger_spec
from tasks.artifacts.tags import MGM_TAGS, SortedTagWriter, binarize, tags_schema
from tasks.fileio import atomic_write_json, sha256_file
from tasks.params.tag import TagConfig
from tasks.reports import write_run_report
from tasks.tag.summary import TagSummary
from tasks.taggers.backends import BACKENDS, COLUMNS, TagBatch
from tasks.taggers.choice import Choice, choose_backend, warn_fallback_once
from tasks.typed import to_dict

log = logging.getLogger(__name__)

ROW_GROUP = 4096  # rows per Parquet row group of tags.parquet (fixed: the bytes must not follow the batch size)


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


# --- what decides the values -----------------------------------------------------------------------

def value_params(cfg: TagConfig, choice: Choice, devices: set[str], weights_sha256: str | None) -> dict:
    """The params that change the tags of `choice.backend`, files by their sha256 (no paths, no
    threads, batch size, workers, runner or device): what tags.parquet's metadata records.
    `devices` (where the forwards ran) only decides `precision`: bf16 autocast on CUDA changes
    the values, the device itself does not beyond float rounding."""
    out: dict = {"backend": choice.backend, "threshold": cfg.threshold, "thresholds": dict(sorted(cfg.thresholds.items())),
                 "raw_top_k": cfg.raw_top_k, "feature": cfg.feature}
    if choice.backend == "i2v":
        out["i2v"] = {"weights_sha256": weights_sha256, "tag_list_sha256": sha256_file(cfg.i2v.tag_list),
                      "tags": dict(sorted(cfg.i2v.tags.items()))}
        if cfg.feature:
            out["i2v"]["feature_weights_sha256"] = sha256_file(cfg.i2v.feature_weights)
        modes = sorted({"bf16 autocast" if d == "cuda" and cfg.bf16 else "float32" for d in devices})
        out["precision"] = " + ".join(modes) or "float32"
    elif choice.backend == "onnx":
        out["onnx"] = {"model_sha256": weights_sha256, "tags_csv_sha256": sha256_file(cfg.onnx.tags_csv),
                       "tags": dict(sorted(cfg.onnx.tags.items())), "bgr": cfg.onnx.bgr, "pad_color": cfg.onnx.pad_color}
    else:
        out["color"] = to_dict(cfg.color)
        if cfg.color.measure:
            out["color"]["measured_with"] = _animeface_version()
    return out


def _animeface_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"animeface {version('animeface')}"
    except PackageNotFoundError:
        return "animeface (version unknown)"


# --- the stage -------------------------------------------------------------------------------------------

def tag_faces(cfg: TagConfig, faces: pa.Table, crops_dir: str) -> TagSummary:
    """Tag `faces` (rows of faces.parquet) and write cfg.out.tags and cfg.out.summary."""
    choice = choose_backend(cfg)
    warn_fallback_once(choice, cfg)
    log.info("tag: backend %s (%s)%s", choice.backend, choice.reason, " on dask" if cfg.runner == "dask" else "")
    if cfg.runner == "dask":  # the same backend and batches, in chunks on the workers
        from tasks.tag.dask_runner import DaskTagger

        backend = DaskTagger(cfg, choice.backend)
    else:
        backend = BACKENDS[choice.backend](cfg)
    summary = TagSummary(backend=choice.backend, reason=choice.reason, weights_sha256=backend.weights_sha256,
                         faces_in=faces.num_rows)
    if cfg.feature and choice.backend != "i2v":
        summary.notes.append(f"tag.feature is set but the {choice.backend} backend has no Illustration2Vec feature: "
                             "column left null")
    schema = tags_schema(raw_top=cfg.raw_top_k > 0, feature=cfg.feature)
    t0 = time.perf_counter()
    writer = SortedTagWriter(cfg.out.tags, schema)
    try:
        with tqdm(total=faces.num_rows, desc="tag", unit="face", disable=None) as bar:
            for batch in backend.batches(faces, crops_dir):
                writer.write(batch_table(batch, choice.backend, cfg, schema))
                summary.add(binarize(batch.probs, cfg))
                bar.update(len(batch.face_ids))
    except BaseException:
        writer.abort()
        raise
    params = value_params(cfg, choice, backend.devices, backend.weights_sha256)
    writer.close({"moeflow.backend": choice.backend, "moeflow.backend_reason": choice.reason,
                  "moeflow.weights_sha256": backend.weights_sha256 or "",
                  "moeflow.params": json.dumps(params, sort_keys=True)})
    summary.seconds = time.perf_counter() - t0
    if summary.tagged < faces.num_rows:
        summary.notes.append(f"{faces.num_rows - summary.tagged} reviewed faces have no stored crop and were not tagged")
    if choice.backend == "color":
        measured = getattr(backend, "measured", 0)
        unknown = summary.tagged - summary.known["blonde_hair"]
        summary.notes.append(f"color: hair/eye colour known for {summary.known['blonde_hair']} faces "
                             f"({measured} measured on the crop with animeface), unknown (-1) for {unknown}; "
                             "styles, blush, smile, open mouth, hat, ribbon, glasses are null without a tagger")
    atomic_write_json(cfg.out.summary, summary.to_json())
    atomic_write_json(cfg.out.metrics, summary.metrics())
    log.info("tag: %d faces in %.1f s (%s faces/s)", summary.tagged, summary.seconds, summary.faces_per_second())
    return summary


def run_report(cfg: TagConfig, summary: TagSummary) -> dict:
    """How this run went on this machine (reports/runs/tag.json, untracked)."""
    return {"seconds": round(summary.seconds, 2), "faces": summary.tagged, "faces_per_second": summary.faces_per_second(),
            "backend": summary.backend, "runner": cfg.runner, "workers": cfg.workers, "threads": cfg.threads,
            "batch_size": cfg.batch_size, "device": cfg.device}


def run_tag(cfg: TagConfig, faces: str, crops: str) -> TagSummary:
    """The stage: the reviewed faces (`faces`, the review stage's table; their crops in `crops`), tagged."""
    choose_backend(cfg)  # a tagger path typo fails before any data is read
    summary = tag_faces(cfg, read_reviewed(faces, list(COLUMNS)), crops)
    write_tagger_spec(cfg.out.tagger, cfg, summary.backend, summary.reason)  # what render reads samples back with
    write_run_report("tag", run_report(cfg, summary))
    return summary
