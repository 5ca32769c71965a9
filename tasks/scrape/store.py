"""The content-addressed image store, its append-only journal, and image validation.

Layout under `scrape.out.images`:
    ab/abcdef…(sha256).jpg   — every kept image, named by the sha256 of its bytes
    journal.jsonl            — one JSON line per decision (kept / duplicate / rejected)
    .tmp/                    — downloads in flight; cleared at every start

A file enters the store by os.replace from .tmp, then its journal line is written, so a
SIGKILL at any moment leaves no partial file and loses no kept image."""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from tasks.fileio import with_version, write_parquet
from tasks.scrape.config import FilterConfig

log = logging.getLogger(__name__)

EXT_FOR_FORMAT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}
FORMAT_FOR_EXT = {"jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}

MANIFEST_VERSION = 1
MANIFEST_SCHEMA = with_version(pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),  # relative to the images directory
    pa.field("source", pa.string(), nullable=False),
    pa.field("post_id", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("page_url", pa.string()),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("format", pa.string(), nullable=False),
    pa.field("bytes", pa.int64(), nullable=False),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("rating", pa.string()),
    pa.field("artist", pa.string()),
    pa.field("title", pa.string()),
    pa.field("character", pa.string()),
    pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False),
]), "raw_manifest", MANIFEST_VERSION)

REJECTED_VERSION = 1
REJECTED_SCHEMA = with_version(pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("post_id", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("final", pa.bool_(), nullable=False),  # false: transient, retried on the next run
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
]), "raw_rejected", REJECTED_VERSION)


def _row(rec: dict, schema: pa.Schema) -> dict:
    row = {}
    for f in schema:
        v = rec.get(f.name)
        if isinstance(v, str) and pa.types.is_timestamp(f.type):
            v = datetime.fromisoformat(v)
        row[f.name] = v
    return row


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def validate_image(path: str, filters: FilterConfig) -> ImageInfo:
    """Decode fully with Pillow; raise Rejected with a reason if the file is not kept."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                fmt = im.format or "?"
                if fmt not in filters.formats:
                    raise Rejected("format", fmt)
                w, h = im.size
                if w * h > filters.max_pixels:
                    raise Rejected("too_many_pixels", f"{w}x{h}")
                im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise Rejected("too_many_pixels", str(e)) from None
        except UnidentifiedImageError:
            raise Rejected("not_image", "Pillow cannot identify the file") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            reason = "truncated" if "truncated" in str(e).lower() else "corrupt"
            raise Rejected(reason, str(e)) from None
    if w < filters.min_width or h < filters.min_height:
        raise Rejected("too_small", f"{w}x{h}")
    return ImageInfo(fmt, w, h)


class Store:
    def __init__(self, root: str):
        self.root = Path(root)
        self.tmp = self.root / ".tmp"
        self.journal_path = self.root / "journal.jsonl"
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # leftovers of a killed run
        self.tmp.mkdir()
        self.kept: dict[str, dict] = {}  # image_id -> kept record
        self.done: dict[str, dict] = {}  # post key -> last final record
        self.failed: dict[str, dict] = {}  # post key -> last transient failure
        self._load()
        self._journal = open(self.journal_path, "a", encoding="utf-8")

    @staticmethod
    def key(source: str, post_id: str) -> str:
        return f"{source}:{post_id}"

    def relpath(self, image_id: str, fmt: str) -> str:
        return f"{image_id[:2]}/{image_id}.{EXT_FOR_FORMAT[fmt]}"

    def _load(self) -> None:
        if not self.journal_path.exists():
            return
        data = self.journal_path.read_bytes()
        if data and not data.endswith(b"\n"):  # a line cut by a kill: drop it
            cut = data.rfind(b"\n") + 1
            with open(self.journal_path, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        missing = 0
        for line in data.decode("utf-8").splitlines():
            rec = json.loads(line)
            k = self.key(rec["source"], rec["post_id"])
            if rec["kind"] == "kept":
                if not (self.root / rec["path"]).exists():
                    missing += 1  # deleted by hand: forget it, fetch again
                    continue
                self.kept[rec["image_id"]] = rec
                self.done[k] = rec
                self.failed.pop(k, None)
            elif rec["kind"] == "duplicate" or rec.get("final"):
                self.done[k] = rec
                self.failed.pop(k, None)
            else:
                self.failed[k] = rec
        if missing:
            log.warning("%d kept images are missing from %s and will be fetched again", missing, self.root)

    def append(self, rec: dict) -> None:
        self._journal.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        self._journal.flush()
        k = self.key(rec["source"], rec["post_id"])
        if rec["kind"] == "kept":
            self.kept[rec["image_id"]] = rec
        if rec["kind"] != "rejected" or rec.get("final"):
            self.done[k] = rec
            self.failed.pop(k, None)
        else:
            self.failed[k] = rec

    def commit(self, tmp_path: str, image_id: str, fmt: str) -> str:
        """Move a validated temp file into place; returns its relative path."""
        rel = self.relpath(image_id, fmt)
        dest = self.root / rel
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp_path, dest)
        return rel

    def close(self) -> None:
        self._journal.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def remove_orphans(self) -> int:
        """Delete stored images that no kept record names (a kill between move and journal)."""
        wanted = {rec["path"] for rec in self.kept.values()}
        removed = 0
        for shard in self.root.iterdir():
            if shard.is_dir() and len(shard.name) == 2:
                for f in shard.iterdir():
                    if f"{shard.name}/{f.name}" not in wanted:
                        f.unlink()
                        removed += 1
        return removed

    def write_manifest(self, path: str) -> int:
        rows = sorted(self.kept.values(), key=lambda r: r["image_id"])
        write_parquet(path, [_row(r, MANIFEST_SCHEMA) for r in rows], MANIFEST_SCHEMA)
        return len(rows)

    def write_rejected(self, path: str) -> int:
        rows = [r for r in list(self.done.values()) + list(self.failed.values()) if r["kind"] == "rejected"]
        rows.sort(key=lambda r: (r["source"], r["post_id"]))
        write_parquet(path, [_row(r, REJECTED_SCHEMA) for r in rows], REJECTED_SCHEMA)
        return len(rows)
