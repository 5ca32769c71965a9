"""The release stage: every kept, reviewed face as URLs and labels, no pixels (data/release/).

For each face the review stage passes on (tasks.artifacts.reviewed: kept by detect, not a false
positive, and checked fine when `review.unreviewed` is drop): where its image came from (source, post id, URL, page URL,
artist, rating, the post's tags) and the sha256 of the original bytes, the detector and the crop
box, the review verdict and the 34 attributes of the tags stage. Opted-out faces are absent
because the manifest no longer holds their images; the stage checks that against optout.csv and
refuses a manifest that still holds one. The files are a pure function of their inputs (rows in
face_id order, no clock): the same data, the same release.

The inputs are joined as Arrow columns (only the columns a release row takes); a row becomes Python
objects only in its batch of BATCH rows, when its JSON line is written; the Parquet file is written
whole from the Arrow table of every row (one row group)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.artifacts.detector import read_detector_spec
from tasks.artifacts.images import read_manifest
from tasks.artifacts.optout import Subject, read_requests
from tasks.artifacts.release import COLUMNS, FORMAT, RELEASE_VERSION, jsonl_line, release_schema
from tasks.artifacts.reviewed import read_reviewed
from tasks.artifacts.tags import MGM_TAGS, read_attributes
from tasks.errors import DataError
from tasks.fileio import atomic_open, atomic_write_bytes, atomic_write_text, write_parquet
from tasks.params.release import ReleaseConfig
from tasks.release.card import render_card

log = logging.getLogger(__name__)

RESIZE = "cv2 INTER_AREA when shrinking, INTER_LANCZOS4 when enlarging; PNG"
BATCH = 4096  # release rows held as Python objects at a time
FACE_COLUMNS = ["face_id", "image_id", "detector", "score", "box_x", "box_y", "box_w", "box_h", "crop_x0", "crop_y0",
                "crop_x1", "crop_y1", "size", "verdict"]  # what a release row takes of a reviewed face
IMAGE_COLUMNS = ["image_id", "source", "post_id", "url", "page_url", "artist", "rating", "tags", "title", "character",
                 "width", "height"]  # and of its image's manifest row (what an opt-out request can match included)


@dataclass(frozen=True)
class ReleaseInputs:
    """The paths dvc.yaml hands the stage: the scrape stage's manifest, rejected table and opt-out
    audit log, optout.csv, the reviewed faces, the tags and the detector spec."""

    manifest: str
    rejected: str
    optout_log: str
    optout: str
    faces: str
    tags: str
    detector: str


def _web(url: str | None) -> str | None:
    """An http(s) URL as published; any other (a file: URL) is left out."""
    return url if url and urlsplit(url).scheme in ("http", "https") else None


def _image_url(url: str | None) -> str | None:
    """The image's URL as published: http(s), or a folder import's `file:<path under scrape.folder>`
    (it names no machine); an absolute file: URL (a manifest from before that) is left out."""
    if url and url.startswith("file:") and not url.startswith("file:/"):
        return url
    return _web(url)


@dataclass
class ReleaseSummary:
    faces: int = 0
    images: int = 0
    by_source: dict = field(default_factory=dict)
    by_verdict: dict = field(default_factory=dict)
    untagged: int = 0
    files: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"{self.faces} faces of {self.images} images released ({', '.join(f'{k} {v}' for k, v in self.by_source.items())}); "
                f"verdicts: {', '.join(f'{k} {v}' for k, v in self.by_verdict.items()) or 'none'}"
                + (f"; {self.untagged} reviewed faces without tags left out" if self.untagged else ""),
                "files: " + ", ".join(f"{p} (sha256 {f['sha256'][:12]})" for p, f in self.files.items())]

    def markdown(self) -> str:
        rows = "\n".join(f"| `{p}` | {f['bytes']} | `{f['sha256']}` |" for p, f in self.files.items())
        return (f"# release\n\n{self.faces} faces of {self.images} images\n\n| file | bytes | sha256 |\n|---|---|---|\n"
                f"{rows}\n")


def _tagger(meta: dict[bytes, bytes]) -> dict:
    """What tags.parquet records of the tagger: backend, why, weights, value params."""
    tagger = {k: meta[f"moeflow.{k}".encode()].decode() for k in ("backend", "backend_reason", "weights_sha256")
              if f"moeflow.{k}".encode() in meta}
    if b"moeflow.params" in meta:
        tagger["params"] = json.loads(meta[b"moeflow.params"])
    return tagger


@dataclass
class Joined:
    """The release's inputs as Arrow tables and, per released face (face_id order), the row of each
    that it takes: the reviewed faces that have a tags row, their images' manifest rows, their
    attributes. Row numbers, not copies: 8 bytes a face per table."""

    faces: pa.Table  # FACE_COLUMNS of the reviewed faces
    images: pa.Table  # IMAGE_COLUMNS of the manifest, an image a row
    tags: pa.Table  # face_id, attributes
    face_rows: np.ndarray  # int64 row numbers into each table, one per released face
    image_rows: np.ndarray
    tag_rows: np.ndarray
    untagged: int  # reviewed faces without a tags row, left out
    tagger: dict

    def __len__(self) -> int:
        return len(self.face_rows)


def _unique(ids: pa.ChunkedArray) -> bool:
    return pc.count_distinct(ids).as_py() == len(ids)


def _last_of_each(ids: pa.ChunkedArray) -> np.ndarray:
    """For each value of `ids`, the row number of its last occurrence (the row a dict keyed by it keeps)."""
    n = len(ids)
    if _unique(ids):
        return np.arange(n, dtype=np.int64)
    reversed_ids = ids.take(pa.array(np.arange(n - 1, -1, -1, dtype=np.int64)))
    first_in_reversed = pc.index_in(ids, value_set=reversed_ids).to_numpy().astype(np.int64)
    return n - 1 - first_in_reversed


def _row_at(keys: pa.ChunkedArray, values: pa.ChunkedArray) -> np.ndarray:
    """For each of `keys`, the row of `values` that holds it (the last when several), or -1."""
    at = pc.index_in(keys, value_set=values).to_numpy(zero_copy_only=False)  # float, NaN where not found
    out = np.full(len(keys), -1, np.int64)
    hit = ~np.isnan(at) if at.dtype.kind == "f" else np.ones(len(keys), bool)
    out[hit] = _last_of_each(values)[at[hit].astype(np.int64)]
    return out


def _check_optouts(manifest: pa.Table, inputs: ReleaseInputs) -> None:
    """DataError when the manifest still holds an image optout.csv names (its rows a batch at a time)."""
    requests = read_requests(inputs.optout)
    if not requests:
        return
    named = []
    for batch in manifest.to_batches(max_chunksize=BATCH):
        named += [r["image_id"] for r in batch.to_pylist() if requests.match(Subject.of(r))]
    if named:
        named.sort()
        raise DataError(f"{inputs.manifest} still holds {len(named)} images {inputs.optout} names "
                        f"(first {named[0][:12]}): run `dvc repro scrape` before releasing")


def join_inputs(inputs: ReleaseInputs) -> Joined:
    """The reviewed faces joined with their images and tags, columnar (no Python object per face)."""
    reviewed = read_reviewed(inputs.faces, FACE_COLUMNS)
    ids = reviewed.column("face_id")
    if len(ids) > 1 and not pc.all(pc.less_equal(ids[:-1], ids[1:])).as_py():  # written sorted: not copied
        reviewed = reviewed.sort_by("face_id")
    manifest = read_manifest(inputs.manifest, IMAGE_COLUMNS)
    if not _unique(manifest.column("image_id")):  # an image's last row, as a dict by image_id kept
        manifest = manifest.take(pc.unique(pa.array(_last_of_each(manifest.column("image_id")))))
    _check_optouts(manifest, inputs)
    img_at = _row_at(reviewed.column("image_id"), manifest.column("image_id"))
    if (img_at < 0).any():
        first = reviewed.column("face_id")[int(np.flatnonzero(img_at < 0)[0])].as_py()
        raise DataError(f"{inputs.faces}: face {first[:12]} has an image the manifest does not "
                        "hold: rerun `dvc repro detect`")
    tags, meta = read_attributes(inputs.tags)
    tag_at = _row_at(reviewed.column("face_id"), tags.column("face_id"))
    tagged = np.flatnonzero(tag_at >= 0)
    untagged = len(tag_at) - len(tagged)
    if untagged:
        log.warning("release: %d reviewed faces have no tags row (rerun `dvc repro tag`): left out", untagged)
    pa.default_memory_pool().release_unused()  # what the reads and the sort freed
    return Joined(reviewed, manifest, tags, tagged, img_at[tagged], tag_at[tagged], untagged, _tagger(meta))


def row_batches(joined: Joined) -> Iterator[list[dict]]:
    """The release rows in face_id order, BATCH at a time (only one batch is ever Python objects)."""
    for lo in range(0, len(joined), BATCH):
        faces = joined.faces.take(joined.face_rows[lo:lo + BATCH]).to_pylist()
        images = joined.images.take(joined.image_rows[lo:lo + BATCH]).to_pylist()
        attributes = joined.tags.column("attributes").take(joined.tag_rows[lo:lo + BATCH]).to_pylist()
        yield [{
            "face_id": f["face_id"], "sha256": img["image_id"], "source": img["source"], "post_id": img["post_id"],
            "url": _image_url(img["url"]), "page_url": _web(img["page_url"]), "artist": img["artist"],
            "rating": img["rating"], "tags": list(img["tags"] or []), "title": img["title"],
            "character": img["character"], "width": img["width"], "height": img["height"],
            "detector": f["detector"], "score": f["score"],
            **{k: f[k] for k in ("box_x", "box_y", "box_w", "box_h", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "size")},
            "verdict": f["verdict"],
            "attributes": [int(v) if v is not None else -1 for v in att]}
            for f, img, att in zip(faces, images, attributes, strict=True)]


def header_of(cfg: ReleaseConfig, pad_fill: str, joined: Joined) -> dict:
    sizes = sorted(pc.unique(joined.faces.column("size").take(joined.face_rows)).to_pylist())
    return {
        "format": FORMAT, "schema_version": RELEASE_VERSION, "title": cfg.title, "license": cfg.license,
        "notes": cfg.notes, "faces": len(joined), "images": len(np.unique(joined.image_rows)),
        "tag_order": list(MGM_TAGS),
        "columns": {n: {"type": str(t), "description": d} for n, (t, d) in COLUMNS.items()},
        "crop": {"size": sizes[0] if len(sizes) == 1 else (sizes or None), "pad_fill": pad_fill, "resize": RESIZE},
        "tagger": joined.tagger,
        "rebuild": "scrape.source: release with scrape.release: this directory (or its faces.parquet), then "
                   "`dvc repro`: every image is fetched from its URL and checked against its sha256, then cropped "
                   "with the recorded boxes",
    }


def write_jsonl(joined: Joined, schema: pa.Schema, jsonl: str) -> dict[str, list[pa.Array]]:
    """Write faces.jsonl a batch of rows at a time; return the same rows as Arrow arrays, a list of
    chunks per column (`one_table` joins them)."""
    columns: dict[str, list[pa.Array]] = {n: [] for n in schema.names}
    with atomic_open(jsonl, "w", encoding="utf-8", newline="\n") as f:
        for rows in row_batches(joined):
            f.write("".join(jsonl_line(r) for r in rows))
            part = pa.Table.from_pylist(rows, schema=schema)
            for n in schema.names:
                columns[n].append(part.column(n).combine_chunks())
    return columns


def one_table(columns: dict[str, list[pa.Array]], schema: pa.Schema) -> pa.Table:
    """The rows as one table, a column a chunk (the Parquet file is written from it whole, one row
    group), joined one column at a time: each column's chunks are freed as it is joined."""
    arrays = []
    for n in schema.names:
        parts = columns.pop(n)
        arrays.append(pa.concat_arrays(parts) if parts else pa.array([], schema.field(n).type))
        del parts
    return pa.Table.from_arrays(arrays, schema=schema)


def _file_entry(path: Path) -> dict:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def _counts(column: pa.ChunkedArray) -> dict:
    """value -> rows, sorted by value."""
    counts = pc.value_counts(column).to_pylist()
    return dict(sorted((c["values"], c["counts"]) for c in counts))


def release(cfg: ReleaseConfig, inputs: ReleaseInputs) -> ReleaseSummary:
    """Write the release: faces.parquet, faces.jsonl, release.json and README.md (release.out)."""
    out = cfg.out
    joined = join_inputs(inputs)
    detect, _ = read_detector_spec(inputs.detector)
    header = header_of(cfg, detect.pad_fill, joined)
    schema = release_schema(header)
    columns = write_jsonl(joined, schema, out.jsonl)
    untagged = joined.untagged
    del joined  # the inputs: only the release's own rows are needed from here
    table = one_table(columns, schema)
    pa.default_memory_pool().release_unused()
    write_parquet(out.faces, table, schema)
    base = Path(out.header).parent
    files = {}
    for p in (out.faces, out.jsonl):
        try:
            name = Path(p).relative_to(base).as_posix()
        except ValueError:
            name = Path(p).name
        files[name] = _file_entry(Path(p))
    full = {**header, "files": files}
    atomic_write_text(out.header, json.dumps(full, indent=2, ensure_ascii=False) + "\n")
    atomic_write_bytes(out.card, render_card(inputs, full, table).encode("utf-8"))
    return ReleaseSummary(faces=table.num_rows, images=header["images"], untagged=untagged, files=files,
                          by_source=_counts(table.column("source")), by_verdict=_counts(table.column("verdict")))
