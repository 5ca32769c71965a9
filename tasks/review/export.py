"""Export the review queue: queue.csv for a spreadsheet, sprite pages and queue.html to look at.

Thumbnails are packed into sprite pages (`page-NNNNN.jpg`, `review.page_size` faces each)
rather than one file per face: DVC then tracks ~1 file per 500 faces, and the browser
fetches one image per page. A queue.csv row's `thumbnail` is `thumbs/page-00003.jpg#17`:
the sprite (relative to queue.csv) and the face's number on that page of queue.html."""

from __future__ import annotations

import codecs
import contextlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa

from tasks.detect.dataset import CropReader
from tasks.errors import DataError
from tasks.fileio import atomic_write_bytes, atomic_write_text, read_parquet
from tasks.review.config import ReviewConfig
from tasks.review.csvio import QUEUE_COLUMNS, Decision, render_csv
from tasks.review.html import PAGE_STEM, render_html, render_page_js

log = logging.getLogger(__name__)

BACKGROUND = (40, 40, 40)


def load_urls(manifest: str | os.PathLike | None) -> dict[str, str]:
    """image_id -> source url from the scrape manifest; empty when there is none."""
    if manifest is None:
        return {}
    if not Path(manifest).exists():
        log.warning("review: no scrape manifest at %s; the queue's url column stays empty", manifest)
        return {}
    t = read_parquet(manifest, "raw_manifest", 1)
    urls = t.column("url").to_pylist()
    pages = t.column("page_url").to_pylist() if "page_url" in t.column_names else [None] * len(urls)
    return {i: (u or p or "") for i, u, p in zip(t.column("image_id").to_pylist(), urls, pages)}


def queue_rows(kept: pa.Table, decisions: dict[str, Decision], urls: dict[str, str]) -> list[dict]:
    """Kept faces without a recorded decision, least confident first within each detector
    (false positives tend to score low, so a reviewer meets them early)."""
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


def _thumbnails(rows: list[dict], kept: pa.Table, crops_dir: str | os.PathLike, size: int) -> dict[str, bytes]:
    """face_id -> JPEG thumbnail, reading each crops shard once."""
    reader = CropReader(kept, crops_dir, cache_shards=1)
    out: dict[str, bytes] = {}
    missing = 0
    for r in sorted(rows, key=lambda r: (r["shard"] or "", r["face_id"])):
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
        out[r["face_id"]] = buf.getvalue()
    if missing:
        log.warning("review: %d queued faces have no stored crop (shown as a red cross)", missing)
    return out


@contextlib.contextmanager
def _replace_dir(target: Path):
    """Yield a fresh temp directory beside `target`; on success it replaces `target` as a whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def export_queue(cfg: ReviewConfig, rows: list[dict], kept: pa.Table, crops_dir: str | os.PathLike) -> int:
    """Write the sprite pages + page scripts, queue.html and queue.csv. Returns the number of pages."""
    from PIL import Image

    size, cols, per = cfg.thumb_size, cfg.columns, cfg.page_size
    thumbs_dir, queue_csv, queue_html = Path(cfg.out.thumbs), Path(cfg.out.queue), Path(cfg.out.html)
    thumbs = _thumbnails(rows, kept, crops_dir, size)
    pages = (len(rows) + per - 1) // per
    rel_csv = _rel(thumbs_dir, queue_csv.parent)
    csv_rows = []
    with _replace_dir(thumbs_dir) as tmp:
        for p in range(pages):
            chunk = rows[p * per:(p + 1) * per]
            stem = PAGE_STEM.format(p + 1)
            n_rows = (len(chunk) + cols - 1) // cols
            sheet = Image.new("RGB", (min(cols, len(chunk)) * size, n_rows * size), BACKGROUND)
            faces_js = []
            for i, r in enumerate(chunk):
                with Image.open(io.BytesIO(thumbs[r["face_id"]])) as im:
                    sheet.paste(im, ((i % cols) * size, (i // cols) * size))
                score = None if r["score"] is None else round(float(r["score"]), 4)
                faces_js.append([r["face_id"], r["detector"], score, r["url"]])
                csv_rows.append({"face_id": r["face_id"], "thumbnail": f"{rel_csv}/{stem}.jpg#{i + 1}",
                                 "url": r["url"], "detector": r["detector"], "score": "" if score is None else score})
            buf = io.BytesIO()
            sheet.save(buf, "JPEG", quality=85, optimize=True)
            (tmp / f"{stem}.jpg").write_bytes(buf.getvalue())
            (tmp / f"{stem}.js").write_text(render_page_js(p + 1, f"{stem}.jpg", cols, faces_js), encoding="utf-8")
    atomic_write_text(queue_html, render_html(total=len(rows), pages=pages, size=size,
                                              thumbs_dir=_rel(thumbs_dir, queue_html.parent), generated=cfg.decisions))
    text = render_csv(QUEUE_COLUMNS, csv_rows, ",", "\r\n")
    atomic_write_bytes(queue_csv, codecs.BOM_UTF8 + text.encode("utf-8"))  # the BOM tells Excel it is UTF-8
    log.info("review: %d faces in the queue, %d pages -> %s, %s", len(rows), pages, queue_csv, queue_html)
    return pages

