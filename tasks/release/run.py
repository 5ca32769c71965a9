"""The release stage: every kept, reviewed face as URLs and labels, no pixels (data/release/).

For each face `reviewed_faces` passes on (kept by detect, not a false positive, and checked fine
when `review.unreviewed` is drop): where its image came from (source, post id, URL, page URL,
artist, rating, the post's tags) and the sha256 of the original bytes, the detector and the crop
box, the review verdict and the 34 attributes of the tags stage. Opted-out faces are absent
because the manifest no longer holds their images; the stage checks that against optout.csv and
refuses a manifest that still holds one. The files are a pure function of their inputs (rows in
face_id order, no clock): the same data, the same release."""

from __future__ import annotations

import collections
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa

from models.tags import MGM_TAGS
from tasks.detect.dataset import read_faces
from tasks.errors import DataError
from tasks.fileio import atomic_open, atomic_write_bytes, atomic_write_text, read_parquet, write_parquet
from tasks.optout.requests import Subject, read_requests
from tasks.release.card import render_card
from tasks.release.schema import COLUMNS, FORMAT, RELEASE_VERSION, jsonl_line, release_schema
from tasks.review.groups import applied_decisions
from tasks.review.selection import load_decisions, select_reviewed
from tasks.scrape.store import MANIFEST_VERSION

log = logging.getLogger(__name__)

TAGS_TABLE, TAGS_VERSION = "tags", 1
RESIZE = "cv2 INTER_AREA when shrinking, INTER_LANCZOS4 when enlarging; PNG"


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


def _tags(path: str) -> tuple[dict[str, list[int]], dict]:
    table = read_parquet(path, TAGS_TABLE, TAGS_VERSION)
    meta = table.schema.metadata or {}
    if json.loads(meta.get(b"moeflow.tag_order", b"null") or "null") not in (None, list(MGM_TAGS)):
        raise DataError(f"{path}: tag order differs from the 34 Make.Girls.Moe tags (rerun the tag stage)")
    tagger = {k: meta[f"moeflow.{k}".encode()].decode() for k in ("backend", "backend_reason", "weights_sha256")
              if f"moeflow.{k}".encode() in meta}
    if b"moeflow.params" in meta:
        tagger["params"] = json.loads(meta[b"moeflow.params"])
    return dict(zip(table.column("face_id").to_pylist(), table.column("attributes").to_pylist())), tagger


def build_rows(params) -> tuple[list[dict], int, dict]:
    """The release rows in face_id order, the number of reviewed faces without tags, and the tagger."""
    faces = read_faces(params.detect.out.faces)
    _, decisions = load_decisions(params.review.decisions)
    reviewed = select_reviewed(faces, decisions, params.review.unreviewed)
    applied = applied_decisions(faces, decisions)
    manifest = {r["image_id"]: r for r in read_parquet(params.scrape.out.manifest, "raw_manifest", MANIFEST_VERSION).to_pylist()}
    requests = read_requests(params.scrape.optout)
    named = sorted(i for i, r in manifest.items() if requests.match(Subject.of(r)))
    if named:
        raise DataError(f"{params.scrape.out.manifest} still holds {len(named)} images {params.scrape.optout} names "
                        f"(first {named[0][:12]}): run `dvc repro scrape` before releasing")
    tags, tagger = _tags(params.tag.out.tags)
    rows, untagged = [], 0
    for f in sorted(reviewed.to_pylist(), key=lambda r: r["face_id"]):
        img = manifest.get(f["image_id"])
        if img is None:
            raise DataError(f"{params.detect.out.faces}: face {f['face_id'][:12]} has an image the manifest does not "
                            "hold: rerun `dvc repro detect`")
        att = tags.get(f["face_id"])
        if att is None:
            untagged += 1
            continue
        d = applied.get(f["face_id"])
        rows.append({
            "face_id": f["face_id"], "sha256": img["image_id"], "source": img["source"], "post_id": img["post_id"],
            "url": _image_url(img["url"]), "page_url": _web(img["page_url"]), "artist": img["artist"],
            "rating": img["rating"], "tags": list(img["tags"] or []), "title": img["title"],
            "character": img["character"], "width": img["width"], "height": img["height"],
            "detector": f["detector"], "score": f["score"],
            **{k: f[k] for k in ("box_x", "box_y", "box_w", "box_h", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "size")},
            "verdict": "fine" if d is not None and not d.false_positive else "unreviewed",
            "attributes": [int(v) if v is not None else -1 for v in att]})
    if untagged:
        log.warning("release: %d reviewed faces have no tags row (rerun `dvc repro tag`): left out", untagged)
    return rows, untagged, tagger


def header_of(params, rows: list[dict], tagger: dict) -> dict:
    cfg = params.release
    sizes = sorted({r["size"] for r in rows})
    return {
        "format": FORMAT, "schema_version": RELEASE_VERSION, "title": cfg.title, "license": cfg.license,
        "notes": cfg.notes, "faces": len(rows), "images": len({r["sha256"] for r in rows}),
        "tag_order": list(MGM_TAGS),
        "columns": {n: {"type": str(t), "description": d} for n, (t, d) in COLUMNS.items()},
        "crop": {"size": sizes[0] if len(sizes) == 1 else (sizes or None), "pad_fill": params.detect.pad_fill, "resize": RESIZE},
        "tagger": tagger,
        "rebuild": "scrape.source: release with scrape.release: this directory (or its faces.parquet), then "
                   "`dvc repro`: every image is fetched from its URL and checked against its sha256, then cropped "
                   "with the recorded boxes",
    }


def _file_entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def release(params) -> ReleaseSummary:
    """Write the release: faces.parquet, faces.jsonl, release.json and README.md (release.out)."""
    out = params.release.out
    rows, untagged, tagger = build_rows(params)
    header = header_of(params, rows, tagger)
    schema = release_schema(header)
    write_parquet(out.faces, pa.Table.from_pylist(rows, schema=schema), schema)
    with atomic_open(out.jsonl, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(jsonl_line(r))
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
    atomic_write_bytes(out.card, render_card(params, full, rows).encode("utf-8"))
    return ReleaseSummary(faces=len(rows), images=header["images"], untagged=untagged, files=files,
                          by_source=dict(sorted(collections.Counter(r["source"] for r in rows).items())),
                          by_verdict=dict(sorted(collections.Counter(r["verdict"] for r in rows).items())))
