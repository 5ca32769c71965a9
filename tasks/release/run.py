"""The release stage: every kept, reviewed face as URLs and labels, no pixels (data/release/).

For each face the review stage passes on (tasks.artifacts.reviewed: kept by detect, not a false
positive, and checked fine when `review.unreviewed` is drop): where its image came from (source, post id, URL, page URL,
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

from tasks.artifacts.detector import read_detector_spec
from tasks.artifacts.images import read_manifest
from tasks.artifacts.optout import Subject, read_requests
from tasks.artifacts.release import COLUMNS, FORMAT, RELEASE_VERSION, jsonl_line, release_schema
from tasks.artifacts.reviewed import read_reviewed
from tasks.artifacts.tags import MGM_TAGS, read_tags
from tasks.errors import DataError
from tasks.fileio import atomic_open, atomic_write_bytes, atomic_write_text, write_parquet
from tasks.params.release import ReleaseConfig
from tasks.release.card import render_card

log = logging.getLogger(__name__)

RESIZE = "cv2 INTER_AREA when shrinking, INTER_LANCZOS4 when enlarging; PNG"


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


def build_rows(inputs: ReleaseInputs) -> tuple[list[dict], int, dict]:
    """The release rows in face_id order, the number of reviewed faces without tags, and the tagger."""
    reviewed = read_reviewed(inputs.faces)
    manifest = {r["image_id"]: r for r in read_manifest(inputs.manifest).to_pylist()}
    requests = read_requests(inputs.optout)
    named = sorted(i for i, r in manifest.items() if requests.match(Subject.of(r)))
    if named:
        raise DataError(f"{inputs.manifest} still holds {len(named)} images {inputs.optout} names "
                        f"(first {named[0][:12]}): run `dvc repro scrape` before releasing")
    tags, meta = read_tags(inputs.tags)
    tagger = _tagger(meta)
    rows, untagged = [], 0
    for f in sorted(reviewed.to_pylist(), key=lambda r: r["face_id"]):
        img = manifest.get(f["image_id"])
        if img is None:
            raise DataError(f"{inputs.faces}: face {f['face_id'][:12]} has an image the manifest does not "
                            "hold: rerun `dvc repro detect`")
        att = tags.get(f["face_id"])
        if att is None:
            untagged += 1
            continue
        rows.append({
            "face_id": f["face_id"], "sha256": img["image_id"], "source": img["source"], "post_id": img["post_id"],
            "url": _image_url(img["url"]), "page_url": _web(img["page_url"]), "artist": img["artist"],
            "rating": img["rating"], "tags": list(img["tags"] or []), "title": img["title"],
            "character": img["character"], "width": img["width"], "height": img["height"],
            "detector": f["detector"], "score": f["score"],
            **{k: f[k] for k in ("box_x", "box_y", "box_w", "box_h", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "size")},
            "verdict": f["verdict"],
            "attributes": [int(v) if v is not None else -1 for v in att]})
    if untagged:
        log.warning("release: %d reviewed faces have no tags row (rerun `dvc repro tag`): left out", untagged)
    return rows, untagged, tagger


def header_of(cfg: ReleaseConfig, pad_fill: str, rows: list[dict], tagger: dict) -> dict:
    sizes = sorted({r["size"] for r in rows})
    return {
        "format": FORMAT, "schema_version": RELEASE_VERSION, "title": cfg.title, "license": cfg.license,
        "notes": cfg.notes, "faces": len(rows), "images": len({r["sha256"] for r in rows}),
        "tag_order": list(MGM_TAGS),
        "columns": {n: {"type": str(t), "description": d} for n, (t, d) in COLUMNS.items()},
        "crop": {"size": sizes[0] if len(sizes) == 1 else (sizes or None), "pad_fill": pad_fill, "resize": RESIZE},
        "tagger": tagger,
        "rebuild": "scrape.source: release with scrape.release: this directory (or its faces.parquet), then "
                   "`dvc repro`: every image is fetched from its URL and checked against its sha256, then cropped "
                   "with the recorded boxes",
    }


def _file_entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def release(cfg: ReleaseConfig, inputs: ReleaseInputs) -> ReleaseSummary:
    """Write the release: faces.parquet, faces.jsonl, release.json and README.md (release.out)."""
    out = cfg.out
    rows, untagged, tagger = build_rows(inputs)
    detect, _ = read_detector_spec(inputs.detector)
    header = header_of(cfg, detect.pad_fill, rows, tagger)
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
    atomic_write_bytes(out.card, render_card(inputs, full, rows).encode("utf-8"))
    return ReleaseSummary(faces=len(rows), images=header["images"], untagged=untagged, files=files,
                          by_source=dict(sorted(collections.Counter(r["source"] for r in rows).items())),
                          by_verdict=dict(sorted(collections.Counter(r["verdict"] for r in rows).items())))
