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

import hashlib
import io
import json
import logging
import os
import shutil
from itertools import chain
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.artifacts.decisions import CONTROL_RE, QUEUE_COLUMNS, Decision, render_csv
from tasks.artifacts.faces import CropReader
from tasks.artifacts.images import read_manifest
from tasks.errors import DataError
from tasks.fileio import atomic_open, atomic_write_text, create_temp, create_temp_dir
from tasks.params.review import ReviewConfig
from tasks.review.html import PART_STEM, render_html, write_index_js, write_part_js

log = logging.getLogger(__name__)

BACKGROUND = (40, 40, 40)
BATCH = 4096  # rows turned into Python objects at a time


def queue_rows(kept: pa.Table, decisions: dict[str, Decision], manifest: str | os.PathLike | None) -> pa.Table:
    """Kept faces without a decision (`decisions`: what applies to each kept face, its duplicate
    group's included), least confident first within each detector (false positives tend to
    score low, so a reviewer meets them early); with their image's `url` and `page_url` from the
    scrape manifest (null without one). Columnar: no Python object per face."""
    rows = kept.select(["face_id", "image_id", "detector", "score", "shard"])
    if decisions:
        rows = rows.filter(pc.invert(pc.is_in(rows["face_id"], value_set=pa.array(list(decisions), pa.string()))))
    order = pc.sort_indices(pa.table({"detector": rows["detector"], "has_score": pc.is_valid(rows["score"]),
                                      "score": pc.fill_null(rows["score"], 0.0), "face_id": rows["face_id"]}),
                            [(c, "ascending") for c in ("detector", "has_score", "score", "face_id")])
    rows = rows.take(order)
    urls = pa.nulls(rows.num_rows, pa.string())
    url_cols = {"url": urls, "page_url": urls}
    if manifest is not None and not Path(manifest).exists():
        log.warning("review: no scrape manifest at %s; the queue's url column stays empty", manifest)
    elif manifest is not None:
        t = read_manifest(manifest, ["image_id", "url", "page_url"])
        at = pc.index_in(rows["image_id"], value_set=t["image_id"])
        url_cols = {c: t[c].take(at) for c in url_cols}
    for name, col in url_cols.items():
        rows = rows.append_column(name, col.cast(pa.string()))
    return rows


def source_url(url: str | None, page_url: str | None) -> str:
    """The link a reviewer gets: the file's url, else its page's. A `file:` url (the folder
    source) names a path on the machine that scraped, so it is left out."""
    for u in (url, page_url):
        if u and not u.lower().startswith("file:"):
            # percent-encoded as a browser would: the queue is read back as a people-edited CSV,
            # which refuses control characters
            return CONTROL_RE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), u)
    return ""


def _page_faces(page: pa.Table) -> list[list]:
    """One page's faces as the sheet lists them: [face_id, detector, score, url]."""
    return [[fid, det, None if score is None else round(float(score), 4), source_url(url, page_url)]
            for fid, det, score, url, page_url in zip(*(page[c].to_pylist() for c in
                                                        ("face_id", "detector", "score", "url", "page_url")))]


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


def _thumbnails(rows: pa.Table, crops_dir: str | os.PathLike, size: int, into: _Thumbs) -> None:
    """Each row's JPEG thumbnail into `into` (by row number), in shard order: each crops shard read once,
    through a reader of that shard's rows only (what it holds is bounded by a shard, not the queue)."""
    shards = pc.fill_null(rows["shard"], "")
    order = pc.sort_indices(pa.table({"shard": shards, "face_id": rows["face_id"]}),
                            [("shard", "ascending"), ("face_id", "ascending")])
    ids = rows.select(["face_id", "shard"])
    missing, start = 0, 0
    for count in pc.value_counts(shards.take(order)).field("counts").to_pylist():
        at = order.slice(start, count)  # the rows of one shard (or of none), by face_id
        start += count
        shard = ids.take(at)
        reader = CropReader(shard, crops_dir, cache_groups=1)
        name = shard["shard"][0].as_py()
        for i, fid in zip(chain.from_iterable(_batches(at)), chain.from_iterable(_batches(shard["face_id"]))):
            png = None
            if fid in reader:
                try:
                    png = reader.read(fid)
                except KeyError:
                    pass
            missing += png is None
            try:
                img = _thumbnail(png, size)
            except OSError as e:
                raise DataError(f"crop of face {fid} in {crops_dir}/{name} is not a readable image: {e}") from None
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


def _write_version(root: Path, rows: pa.Table, thumbs: _Thumbs, cfg: ReviewConfig) -> tuple[str, int]:
    """Write the parts into a new version directory under `root`; returns the version and the
    number of pages. Memory holds one page's faces and sprite at a time (each sprite goes to a
    file of its own first: the version hashes them all, and the parts name the version)."""
    size, cols, per, per_file = cfg.thumb_size, cfg.columns, cfg.page_size, cfg.pages_per_file
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(create_temp_dir(root, prefix=".new-"))
    try:
        layout = {"size": size, "columns": cols, "page_size": per, "pages_per_file": per_file}
        digest = hashlib.sha256(json.dumps(layout).encode())
        starts = range(0, rows.num_rows, per)
        for n, p in enumerate(starts):
            faces = _page_faces(rows.slice(p, per))
            jpg = _sprite(range(p, p + len(faces)), thumbs, size, cols)
            (tmp / f".sprite-{n}.jpg").write_bytes(jpg)
            digest.update(hashlib.sha256(jpg).digest())
            digest.update(json.dumps(faces).encode())
        version = digest.hexdigest()[:12]

        def sprites(start: int, stop: int):
            for n in range(start, stop):
                path = tmp / f".sprite-{n}.jpg"
                jpg = path.read_bytes()
                path.unlink()
                yield _page_faces(rows.slice(starts[n], per)), jpg

        for k, start in enumerate(range(0, len(starts), per_file), start=1):
            write_part_js(tmp / f"{PART_STEM.format(k)}.js", part=k, first=start + 1, version=version, columns=cols,
                          pages=sprites(start, min(start + per_file, len(starts))))
        write_index_js(tmp / "index.js", version, _batches(rows["face_id"]))
        final = root / version
        if final.is_dir():  # this very queue is there already (same name, same content)
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version, len(starts)


def _batches(values: pa.Array | pa.ChunkedArray):
    """An Arrow column's values, BATCH at a time, as Python lists."""
    for start in range(0, len(values), BATCH):
        yield values.slice(start, BATCH).to_pylist()


def _write_csv(path: Path, rows: pa.Table, sheet: str, version: str, per: int) -> None:
    """queue.csv, a page at a time: each row's `thumbnail` opens the sheet at its page and cell.
    UTF-8 with a BOM (it tells Excel), CRLF line ends."""
    with atomic_open(path, "w", encoding="utf-8-sig", newline="") as f:
        f.write(render_csv(QUEUE_COLUMNS, [], ",", "\r\n"))
        for n, p in enumerate(range(0, rows.num_rows, per), start=1):
            f.write(render_csv(QUEUE_COLUMNS, [
                {"face_id": face[0], "thumbnail": f"{sheet}#v={version}&p={n}&c={i + 1}", "url": face[3],
                 "detector": face[1], "score": "" if face[2] is None else face[2]}
                for i, face in enumerate(_page_faces(rows.slice(p, per)))], ",", "\r\n", write_header=False))


def _prune(root: Path, keep: str) -> None:
    """Delete every other version (and leftovers of killed runs) once nothing points at them."""
    for p in root.iterdir():
        if p.name == keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def export_queue(cfg: ReviewConfig, rows: pa.Table, crops_dir: str | os.PathLike) -> QueueExport:
    """Write a new version of the queue (part scripts with the sprite pages + index), then queue.html,
    then queue.csv, then delete older versions. `rows`: queue_rows' (their crops are read from `crops_dir`)."""
    thumbs_root, queue_csv, queue_html = Path(cfg.out.thumbs), Path(cfg.out.queue), Path(cfg.out.html)
    with _Thumbs(thumbs_root, rows.num_rows) as thumbs:
        _thumbnails(rows, crops_dir, cfg.thumb_size, thumbs)
        version, pages = _write_version(thumbs_root, rows, thumbs, cfg)
    version_dir = thumbs_root / version
    atomic_write_text(queue_html, render_html(total=rows.num_rows, pages=pages, per_file=cfg.pages_per_file,
                                              size=cfg.thumb_size, thumbs_dir=_rel(version_dir, queue_html.parent),
                                              version=version, store=cfg.decisions))
    _write_csv(queue_csv, rows, _rel(queue_html, queue_csv.parent), version, cfg.page_size)
    _prune(thumbs_root, version)
    log.info("review: %d faces in the queue, %d pages (version %s) -> %s, %s", rows.num_rows, pages, version,
             queue_csv, queue_html)
    return QueueExport(pages, version)
