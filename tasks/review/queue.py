"""The review queue: queue.csv for a spreadsheet, sprite pages and queue.html to look at.

Thumbnails are packed into sprite pages (`review.page_size` faces each), and the pages into part
files (`part-NNNNN.js`, `review.pages_per_file` pages each, the sprites inside as base64 JPEG)
rather than one file per face or two per page: DVC then tracks one file per 4,000 faces (the
defaults), and the browser reads one part for several pages.

Every export is a *version* of the queue: its parts go into `thumbs/<version>/`, where the
version is a hash of what the pages show (faces, order, thumbnails, layout). The version
directory is complete (written under a temporary name, then renamed) before queue.html and
then queue.csv are replaced, each atomically, to point at it; older versions are deleted
last. A run killed at any point therefore leaves each of queue.csv and queue.html pointing
at thumbnails of its own faces: a queue.csv row's `thumbnail`, e.g.
`queue.html#v=3f2a9c01d4e5&p=3&c=17`, opens the sheet at page 3 with cell #17 outlined, and
names the version whose page 3 shows that row's face (the sheet says so when it shows another)."""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks.artifacts.decisions import CONTROL_RE, QUEUE_COLUMNS, Decision, render_csv
from tasks.artifacts.faces import CropReader
from tasks.artifacts.images import read_manifest
from tasks.errors import DataError
from tasks.fileio import atomic_write_bytes, atomic_write_text, create_temp, create_temp_dir
from tasks.params.review import ReviewConfig
from tasks.review.html import PART_STEM, render_html, render_index_js, write_part_js

log = logging.getLogger(__name__)

BACKGROUND = (40, 40, 40)


def load_urls(manifest: str | os.PathLike | None) -> dict[str, str]:
    """image_id -> source url from the scrape manifest; empty when there is none."""
    if manifest is None:
        return {}
    if not Path(manifest).exists():
        log.warning("review: no scrape manifest at %s; the queue's url column stays empty", manifest)
        return {}
    t = read_manifest(manifest, ["image_id", "url", "page_url"])
    urls, pages = t.column("url").to_pylist(), t.column("page_url").to_pylist()
    return {i: source_url(u, p) for i, u, p in zip(t.column("image_id").to_pylist(), urls, pages)}


def source_url(url: str | None, page_url: str | None) -> str:
    """The link a reviewer gets: the file's url, else its page's. A `file:` url (the folder
    source) names a path on the machine that scraped, so it is left out."""
    for u in (url, page_url):
        if u and not u.lower().startswith("file:"):
            # percent-encoded as a browser would: the queue is read back as a people-edited CSV,
            # which refuses control characters
            return CONTROL_RE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), u)
    return ""


def queue_rows(kept: pa.Table, decisions: dict[str, Decision], urls: dict[str, str]) -> list[dict]:
    """Kept faces without a decision (`decisions`: what applies to each kept face, its duplicate
    group's included), least confident first within each detector (false positives tend to
    score low, so a reviewer meets them early)."""
    rows = [r for r in kept.select(["face_id", "image_id", "detector", "score", "shard"]).to_pylist()
            if r["face_id"] not in decisions]
    rows.sort(key=lambda r: (r["detector"], r["score"] is not None, r["score"] or 0.0, r["face_id"]))
    for r in rows:
        r["url"] = urls.get(r["image_id"], "")
    return rows


def _thumbnail(png: bytes | None, size: int):
    from PIL import Image, ImageDraw, ImageOps

    if png is None:
        img = Image.new("RGB", (size, size), BACKGROUND)
        d = ImageDraw.Draw(img)
        d.line((0, 0, size, size), fill=(229, 72, 77), width=2)
        d.line((0, size, size, 0), fill=(229, 72, 77), width=2)
        return img
    with Image.open(io.BytesIO(png)) as im:
        return ImageOps.pad(im.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC, color=BACKGROUND)


class _Thumbs:
    """The queue's JPEG thumbnails by row number, spooled to a temp file in `directory` (`_prune`
    deletes one a killed run leaves): memory holds one page's thumbnails, not the whole queue's."""

    def __init__(self, directory: Path, n: int):
        directory.mkdir(parents=True, exist_ok=True)
        fd, self.path = create_temp(directory, prefix=".thumbs-")
        self._writer, self._reader = os.fdopen(fd, "wb"), None
        self._at, self._len = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self._end = 0

    def put(self, i: int, jpg: bytes) -> None:
        self._writer.write(jpg)
        self._at[i], self._len[i] = self._end, len(jpg)
        self._end += len(jpg)

    def get(self, i: int) -> bytes:
        if self._reader is None:
            self._writer.close()
            self._reader = open(self.path, "rb")
        self._reader.seek(int(self._at[i]))
        return self._reader.read(int(self._len[i]))

    def __enter__(self) -> "_Thumbs":
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()
        if self._reader is not None:
            self._reader.close()
        os.unlink(self.path)


def _thumbnails(rows: list[dict], kept: pa.Table, crops_dir: str | os.PathLike, size: int, into: _Thumbs) -> None:
    """Each row's JPEG thumbnail into `into`, reading each crops shard once."""
    reader = CropReader(kept, crops_dir, cache_groups=1)
    missing = 0
    for i in sorted(range(len(rows)), key=lambda i: (rows[i]["shard"] or "", rows[i]["face_id"])):
        r = rows[i]
        png = None
        if r["face_id"] in reader:
            try:
                png = reader.read(r["face_id"])
            except KeyError:
                pass
        missing += png is None
        try:
            img = _thumbnail(png, size)
        except OSError as e:
            raise DataError(f"crop of face {r['face_id']} in {crops_dir}/{r['shard']} is not a readable image: {e}") from None
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        into.put(i, buf.getvalue())
    if missing:
        log.warning("review: %d queued faces have no stored crop (shown as a red cross)", missing)


@dataclass(frozen=True)
class QueueExport:
    pages: int
    version: str


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _sprite(chunk: range, thumbs: _Thumbs, size: int, cols: int) -> bytes:
    """The sprite page of rows `chunk` (row numbers)."""
    from PIL import Image

    n_rows = (len(chunk) + cols - 1) // cols
    sheet = Image.new("RGB", (min(cols, len(chunk)) * size, n_rows * size), BACKGROUND)
    for i, row in enumerate(chunk):
        with Image.open(io.BytesIO(thumbs.get(row))) as im:
            sheet.paste(im, ((i % cols) * size, (i // cols) * size))
    buf = io.BytesIO()
    sheet.save(buf, "JPEG", quality=85, optimize=True)
    return buf.getvalue()


def _write_version(root: Path, rows: list[dict], thumbs: _Thumbs, cfg: ReviewConfig) -> tuple[str, list[list]]:
    """Write the parts into a new version directory under `root`; returns the version and each
    page's faces ([face_id, detector, score, url])."""
    size, cols, per, per_file = cfg.thumb_size, cfg.columns, cfg.page_size, cfg.pages_per_file
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(create_temp_dir(root, prefix=".new-"))
    try:
        layout = {"size": size, "columns": cols, "page_size": per, "pages_per_file": per_file}
        digest = hashlib.sha256(json.dumps(layout).encode())
        pages = []
        for p in range(0, len(rows), per):  # each sprite to a file of its own first: the version hashes them all
            chunk = rows[p:p + per]
            faces = [[r["face_id"], r["detector"], None if r["score"] is None else round(float(r["score"]), 4), r["url"]]
                     for r in chunk]
            jpg = _sprite(range(p, p + len(chunk)), thumbs, size, cols)
            (tmp / f".sprite-{len(pages)}.jpg").write_bytes(jpg)
            digest.update(hashlib.sha256(jpg).digest())
            digest.update(json.dumps(faces).encode())
            pages.append(faces)
        version = digest.hexdigest()[:12]

        def sprites(start: int, stop: int):
            for n in range(start, stop):
                path = tmp / f".sprite-{n}.jpg"
                jpg = path.read_bytes()
                path.unlink()
                yield pages[n], jpg

        for k, start in enumerate(range(0, len(pages), per_file), start=1):
            write_part_js(tmp / f"{PART_STEM.format(k)}.js", part=k, first=start + 1, version=version, columns=cols,
                          pages=sprites(start, min(start + per_file, len(pages))))
        (tmp / "index.js").write_text(render_index_js(version, [r["face_id"] for r in rows]), encoding="utf-8")
        final = root / version
        if final.is_dir():  # this very queue is there already (same name, same content)
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version, pages


def _prune(root: Path, keep: str) -> None:
    """Delete every other version (and leftovers of killed runs) once nothing points at them."""
    for p in root.iterdir():
        if p.name == keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def export_queue(cfg: ReviewConfig, rows: list[dict], kept: pa.Table, crops_dir: str | os.PathLike) -> QueueExport:
    """Write a new version of the queue (part scripts with the sprite pages + index), then queue.html,
    then queue.csv, then delete older versions."""
    thumbs_root, queue_csv, queue_html = Path(cfg.out.thumbs), Path(cfg.out.queue), Path(cfg.out.html)
    with _Thumbs(thumbs_root, len(rows)) as thumbs:
        _thumbnails(rows, kept, crops_dir, cfg.thumb_size, thumbs)
        version, pages = _write_version(thumbs_root, rows, thumbs, cfg)
    version_dir = thumbs_root / version
    atomic_write_text(queue_html, render_html(total=len(rows), pages=len(pages), per_file=cfg.pages_per_file,
                                              size=cfg.thumb_size, thumbs_dir=_rel(version_dir, queue_html.parent),
                                              version=version, store=cfg.decisions))
    sheet = _rel(queue_html, queue_csv.parent)
    csv_rows = [{"face_id": f[0], "thumbnail": f"{sheet}#v={version}&p={n}&c={i + 1}", "url": f[3],
                 "detector": f[1], "score": "" if f[2] is None else f[2]}
                for n, faces in enumerate(pages, start=1) for i, f in enumerate(faces)]
    text = render_csv(QUEUE_COLUMNS, csv_rows, ",", "\r\n")
    atomic_write_bytes(queue_csv, codecs.BOM_UTF8 + text.encode("utf-8"))  # the BOM tells Excel it is UTF-8
    _prune(thumbs_root, version)
    log.info("review: %d faces in the queue, %d pages (version %s) -> %s, %s", len(rows), len(pages), version,
             queue_csv, queue_html)
    return QueueExport(len(pages), version)
