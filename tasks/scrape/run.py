"""The scrape stage as one plain function: list posts, filter, fetch politely, validate,
store by content, journal every decision, and write the manifest."""

from __future__ import annotations

import collections
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tqdm import tqdm

from tasks.errors import SourceError
from tasks.fileio import atomic_write_json, sha256_file
from tasks.http import Download, FetchFailed, FetchRejected, PoliteSession
from tasks.scrape.config import ScrapeConfig
from tasks.scrape.sources import Extractor, Post
from tasks.scrape.store import FORMAT_FOR_EXT, ImageInfo, Rejected, Store, validate_image

log = logging.getLogger(__name__)


@dataclass
class ScrapeSummary:
    source: str
    kept_new: int = 0
    kept_total: int = 0
    duplicate: int = 0
    already_done: int = 0
    listed: int = 0
    failed: int = 0
    rejected: collections.Counter = field(default_factory=collections.Counter)
    skipped: collections.Counter = field(default_factory=collections.Counter)
    requests: int = 0
    seconds: float = 0.0
    stopped: str | None = None

    def lines(self) -> list[str]:
        def fmt(c):
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"
        return [
            f"source: {self.source}; posts listed: {self.listed}",
            f"kept: {self.kept_new} new, {self.kept_total} in total; duplicates: {self.duplicate}; "
            f"already done earlier: {self.already_done}",
            f"rejected: {sum(self.rejected.values())} ({fmt(self.rejected)})",
            f"skipped: {sum(self.skipped.values())} ({fmt(self.skipped)})",
            f"failed (retried next run): {self.failed}; HTTP requests: {self.requests}; time: {self.seconds:.1f}s",
        ] + ([f"stopped early: {self.stopped}"] if self.stopped else [])

    def as_dict(self) -> dict:
        return {"source": self.source, "listed": self.listed, "kept_new": self.kept_new, "kept_total": self.kept_total,
                "duplicate": self.duplicate, "already_done": self.already_done, "failed": self.failed,
                "rejected": dict(sorted(self.rejected.items())), "skipped": dict(sorted(self.skipped.items())),
                "requests": self.requests, "seconds": round(self.seconds, 2), "stopped": self.stopped}

    def markdown(self) -> str:
        rows = [("kept (new)", self.kept_new), ("kept (total)", self.kept_total), ("duplicates", self.duplicate),
                ("already done", self.already_done), ("failed, retried next run", self.failed)]
        rows += [(f"rejected: {k}", v) for k, v in sorted(self.rejected.items())]
        rows += [(f"skipped: {k}", v) for k, v in sorted(self.skipped.items())]
        body = "\n".join(f"| {k} | {v} |" for k, v in rows)
        note = f"\n\n**Stopped early:** {self.stopped}" if self.stopped else ""
        return (f"# scrape: {self.source}\n\n{self.listed} posts listed, {self.requests} HTTP requests, "
                f"{self.seconds:.1f}s\n\n| count | n |\n|---|---|\n{body}{note}\n")


def prefilter(post: Post, cfg: ScrapeConfig) -> str | None:
    """The reason a listed post is skipped before any download, or None."""
    f = cfg.filters
    if not post.file_url:
        return "no_file_url"
    if post.rating is not None and post.rating not in f.ratings:
        return "rating"
    if post.artist and set(post.artist.split()) & set(f.blocklist_artists):
        return "blocklist_artist"
    if set(post.tags) & set(f.blocklist_tags):
        return "blocklist_tag"
    if post.ext and FORMAT_FOR_EXT.get(post.ext.lower()) not in f.formats:
        return "format"
    if (post.width is not None and post.width < f.min_width) or (post.height is not None and post.height < f.min_height):
        return "too_small"
    return None


def _copy_local(path: str, tmp_dir: str) -> Download:
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
    os.close(fd)
    shutil.copyfile(path, tmp)
    return Download(tmp, sha256_file(tmp), os.path.getsize(tmp), path, "")


def fetch(post: Post, http: PoliteSession | None, store: Store, cfg: ScrapeConfig) -> tuple[Download, ImageInfo]:
    """Download (or copy) and validate one post. Runs in a worker thread."""
    if post.local_path:
        if os.path.getsize(post.local_path) > cfg.http.max_bytes:
            raise FetchRejected("too_large", post.local_path)
        dl = _copy_local(post.local_path, str(store.tmp))
    else:
        dl = http.download(post.file_url, str(store.tmp))
    try:
        return dl, validate_image(dl.path, cfg.filters)
    except BaseException:
        os.unlink(dl.path)
        raise


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def scrape(cfg: ScrapeConfig, progress: bool | None = None) -> ScrapeSummary:
    """Run the scrape stage; resumable and idempotent. Writes cfg.out.*."""
    t0 = time.monotonic()
    summary = ScrapeSummary(source=cfg.source)
    store = Store(cfg.out.images)
    extractor_cls = Extractor.registry[cfg.source]
    extractor = extractor_cls(cfg, None)
    http = None
    if extractor_cls.uses_http:
        http = extractor.http = PoliteSession(cfg.http, extractor_cls.allowed_hosts(cfg), auth=extractor.auth())
    limit = cfg.filters.max_images
    inflight: dict[Future, Post] = {}
    bar = tqdm(total=limit, initial=min(len(store.kept), limit), desc="scrape: kept", unit="img", leave=False,
               disable=None if progress is None else not progress)  # None: on when stderr is a terminal

    def settle(fut: Future, post: Post) -> None:
        k = dict(source=post.source, post_id=post.post_id, url=post.file_url)
        try:
            dl, info = fut.result()
        except (FetchRejected, Rejected) as e:
            summary.rejected[e.reason] += 1
            store.append({"kind": "rejected", **k, "reason": e.reason, "detail": e.detail, "final": True, "at": _now()})
            return
        except FetchFailed as e:
            summary.failed += 1
            store.append({"kind": "rejected", **k, "reason": "fetch_failed", "detail": str(e), "final": False, "at": _now()})
            log.warning("%s", e)
            return
        if dl.sha256 in store.kept:
            os.unlink(dl.path)
            summary.duplicate += 1
            store.append({"kind": "duplicate", **k, "image_id": dl.sha256, "at": _now()})
            return
        rel = store.commit(dl.path, dl.sha256, info.format)
        store.append({"kind": "kept", **k, "image_id": dl.sha256, "path": rel, "page_url": post.page_url,
                      "width": info.width, "height": info.height, "format": info.format, "bytes": dl.size,
                      "tags": list(post.tags), "rating": post.rating, "artist": post.artist, "title": post.title,
                      "character": post.character, "fetched_at": _now()})
        summary.kept_new += 1
        bar.update(1)

    def drain(block_until: int) -> None:
        while len(inflight) > block_until:
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in done:
                settle(fut, inflight.pop(fut))

    pool = ThreadPoolExecutor(max_workers=cfg.http.concurrency, thread_name_prefix="fetch")
    try:
        for post in extractor.posts():
            summary.listed += 1
            while inflight and len(store.kept) + len(inflight) >= limit:
                drain(len(inflight) - 1)  # enough in flight to reach max_images: wait for one
            if len(store.kept) >= limit:
                summary.skipped["max_images"] += 1
                break
            if store.key(post.source, post.post_id) in store.done:
                summary.already_done += 1
                continue
            reason = prefilter(post, cfg)
            if reason is None and http is not None:
                try:
                    http.check_url(post.file_url)
                except FetchRejected as e:
                    reason = e.reason
            if reason:
                summary.skipped[reason] += 1
                continue
            inflight[pool.submit(fetch, post, http, store, cfg)] = post
            drain(2 * cfg.http.concurrency - 1)  # bounded: at most 2x concurrency in flight
        drain(0)
        if summary.listed == 0:
            raise SourceError(f"{cfg.source}: no posts found"
                              + (f" for tags {cfg.tags!r} at {cfg.base_url}" if cfg.source in ("danbooru", "gelbooru") else ""))
    except SourceError as e:
        summary.stopped = str(e)
        for fut in inflight:
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for fut, post in list(inflight.items()):  # finished while shutting down: keep them
            if fut.done() and not fut.cancelled():
                try:
                    settle(fut, post)
                except SourceError:
                    pass
        bar.close()
        summary.kept_total = len(store.kept)
        summary.requests = http.requests_made if http else 0
        orphans = store.remove_orphans()
        if orphans:
            log.info("removed %d stored files no journal line names", orphans)
        store.write_manifest(cfg.out.manifest)
        store.write_rejected(cfg.out.rejected)
        store.close()
        if http:
            http.close()
        summary.seconds = time.monotonic() - t0
        atomic_write_json(cfg.out.summary, summary.as_dict())
    return summary
