"""The `release` source: rebuild a dataset from a release manifest (tasks.artifacts.release).

Each released image is fetched again from its URL through the same polite HTTP layer as every web
source (its hosts are the only ones allowed; a known site's own interval holds on its hosts), or,
for a folder import, read from `scrape.folder` at its `file:` path (or its post_id). Every download's sha256 must be the
released one: anything else is rejected (`sha256_mismatch`), counted and never kept. optout.csv
applies as to any source, before a byte is fetched (the release names each image's sha256). The
released faces of each kept image go to `scrape.out.boxes`, which detect crops as they are, so the
rebuild gives the same face_ids."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from tasks.artifacts.release import read_release
from tasks.http import host_allowed, host_of
from tasks.params.scrape import ScrapeConfig
from tasks.scrape.sources import Extractor, Post, _ext

log = logging.getLogger(__name__)

FACE_FIELDS = ("face_id", "detector", "score", "box_x", "box_y", "box_w", "box_h",
               "crop_x0", "crop_y0", "crop_x1", "crop_y1", "size")


def _web(url: str | None) -> bool:
    return bool(url) and urlsplit(url).scheme in ("http", "https")


class Release(Extractor):
    name = "release"

    def __init__(self, cfg: ScrapeConfig):
        rows, self.header, self.file = read_release(cfg.release)
        self.images: dict[str, dict] = {}
        self.faces: dict[str, list[dict]] = {}
        pad_fill = (self.header.get("crop") or {}).get("pad_fill")
        for r in rows:
            self.images.setdefault(r["sha256"], r)
            self.faces.setdefault(r["sha256"], []).append({**{k: r[k] for k in FACE_FIELDS}, "pad_fill": pad_fill})
        log.info("release: %s: %d faces of %d images", self.file, len(rows), len(self.images))
        super().__init__(cfg)

    def auth(self) -> None:
        """No login: a release names hosts of many sites, and a booru's key is for its own site only."""
        return None

    def allowed_hosts(self) -> set[str]:
        return {host_of(r["url"]) for r in self.images.values() if _web(r["url"])} | set(self.cfg.file_hosts)

    def http_settings(self):
        """A known site's minimum interval holds on a release that names its hosts."""
        settings = super().http_settings()
        hosts = self.allowed_hosts()
        slowest = max((cls.min_interval for cls in Extractor.registry.values() if cls.site
                       and any(_on_site(h, cls) for h in hosts)), default=0.0)
        if slowest > settings.interval:
            log.info("release: its URLs are on sites that ask for one request per %gs: using that", slowest)
            return dataclasses.replace(settings, interval=slowest)
        return settings

    def posts(self) -> Iterator[Post]:
        folder = Path(self.cfg.folder)
        for sha in sorted(self.images):
            r = self.images[sha]
            url = r["url"] if _web(r["url"]) else None
            local = None
            if url is None and r["source"] == "folder":
                local = _in_folder(folder, r)
                # its place in the folder, as the folder source records it: no machine path
                url = f"file:{local.relative_to(folder.resolve()).as_posix()}" if local else None
            yield Post(source=r["source"], post_id=r["post_id"], file_url=url, page_url=r.get("page_url"),
                       tags=tuple(r.get("tags") or ()), rating=r.get("rating"), artist=r.get("artist"),
                       width=r.get("width"), height=r.get("height"),
                       ext=local.suffix.lower().lstrip(".") if local else _ext(url),
                       title=r.get("title"), character=r.get("character"),
                       local_path=str(local) if local else None, sha256=sha)

    def recorded_faces(self) -> dict[str, list[dict]]:
        return self.faces


def _in_folder(folder: Path, r: dict) -> Path | None:
    """A folder import's file inside `scrape.folder`: at its `file:` path, else at its post_id."""
    url = r["url"] or ""
    root = folder.resolve()
    for rel in (url[len("file:"):] if url.startswith("file:") else None, r["post_id"]):
        if rel:
            p = (folder / rel).resolve()
            if p.is_relative_to(root) and p.is_file():
                return p
    return None


def _on_site(host: str, cls: type[Extractor]) -> bool:
    """Whether `host` is one of the public sites `cls` knows, or one of their file hosts."""
    return bool(re.match(cls.site + r"(?:/|$)", f"https://{host}", re.I)) or host_allowed(host, cls.site_file_hosts)
