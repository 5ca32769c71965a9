"""The scrape stage as one plain function: list posts, filter, fetch politely on threads,
validate in worker processes (so decoding never holds up the network), store by content,
journal every decision, and write the manifest."""

from __future__ import annotations

import collections
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tqdm import tqdm

from tasks.artifacts.boxes import write_boxes
from tasks.artifacts.images import FORMAT_FOR_EXT, OPTOUT
from tasks.artifacts.optout import Requests, read_requests
from tasks.errors import Rejected, SourceError
from tasks.fileio import atomic_write_json
from tasks.http import Download, FetchFailed, PoliteSession, Stopped
from tasks.params.scrape import ScrapeConfig
from tasks.reports import write_run_report
from tasks.scrape import rebuild as _rebuild  # noqa: F401 - registers the `release` source
from tasks.scrape.local import copy_local, hash_in_place, hash_local
from tasks.scrape.sources import Extractor, Post
from tasks.scrape.store import Store
from tasks.scrape.takedown import Takedown
from tasks.scrape.validate import CUT_SHORT, DecoderCrashed, Decoders

log = logging.getLogger(__name__)


@dataclass
class ScrapeSummary:
    source: str
    kept_new: int = 0
    kept_total: int = 0
    duplicate: int = 0
    already_done: int = 0
    listed: int = 0
    removed: int = 0  # kept images an opt-out took out this run (their faces leave every later artifact)
    failures: collections.Counter = field(default_factory=collections.Counter)  # transient, by reason
    rejected: collections.Counter = field(default_factory=collections.Counter)
    skipped: collections.Counter = field(default_factory=collections.Counter)
    requests: int = 0
    seconds: float = 0.0
    stopped: str | None = None

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def lines(self) -> list[str]:
        def fmt(c):
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"
        return [
            f"source: {self.source}; posts listed: {self.listed}",
            f"kept: {self.kept_new} new, {self.kept_total} in total; duplicates: {self.duplicate}; "
            f"already done earlier: {self.already_done}",
            f"removed on request (optout.csv): {self.removed}; "
            f"rejected: {sum(self.rejected.values())} ({fmt(self.rejected)})",
            f"skipped: {sum(self.skipped.values())} ({fmt(self.skipped)})",
            f"failed (retried next run): {self.failed} ({fmt(self.failures)}); HTTP requests: {self.requests}; "
            f"time: {self.seconds:.1f}s",
        ] + ([f"stopped early: {self.stopped}"] if self.stopped else [])

    def as_dict(self) -> dict:
        return {"source": self.source, "listed": self.listed, "kept_new": self.kept_new, "kept_total": self.kept_total,
                "duplicate": self.duplicate, "already_done": self.already_done, "removed": self.removed,
                "failed": self.failed,
                "failures": dict(sorted(self.failures.items())),
                "rejected": dict(sorted(self.rejected.items())), "skipped": dict(sorted(self.skipped.items())),
                "requests": self.requests, "stopped": self.stopped}

    def metrics(self) -> dict:
        """The headline numbers (scrape.out.metrics, the DVC metric); by reason: as_dict()."""
        return {"images": self.kept_total, "rejected": sum(self.rejected.values()),
                "skipped": sum(self.skipped.values()), "failed": self.failed}

    def markdown(self) -> str:
        rows = [("kept (new)", self.kept_new), ("kept (total)", self.kept_total), ("duplicates", self.duplicate),
                ("already done", self.already_done), ("removed on request (optout.csv)", self.removed)]
        rows += [(f"failed, retried next run: {k}", v) for k, v in sorted(self.failures.items())]
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


def fetch(post: Post, http: PoliteSession | None, tmp_dir: str, max_bytes: int, in_place: bool) -> Download:
    """Download (or copy) one post into tmp_dir; a local file `in_place` is only hashed where it is
    (scrape.folder_import: reference). Runs in a worker thread."""
    if not post.local_path:
        return http.download(post.file_url, tmp_dir)
    name = post.file_url or post.local_path
    if in_place:
        return hash_in_place(post.local_path, name, max_bytes)
    return copy_local(post.local_path, name, tmp_dir, max_bytes)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class _Job:
    post: Post
    attempt: int = 0
    dl: Download | None = None  # set once downloaded: the job is then being validated


class _Run:
    """One run's moving parts: downloads on threads, decodes in processes, bookkeeping here."""

    def __init__(self, cfg: ScrapeConfig, store: Store, http: PoliteSession | None, summary: ScrapeSummary,
                 progress: bool | None, requests: Requests):
        self.cfg, self.store, self.http, self.summary = cfg, store, http, summary
        # when a post was fetched or judged; local files carry no clock, so a rebuild of the same
        # files gives the same manifest and rejected table
        self.now = _now if http is not None else (lambda: None)
        self.takedown = Takedown(requests, store, cfg.out.optout_log, clock=self.now)
        self.limit = cfg.filters.max_images
        self.workers = cfg.validate_workers or min(os.cpu_count() or 1, cfg.http.concurrency)
        self.threads = ThreadPoolExecutor(max_workers=cfg.http.concurrency, thread_name_prefix="fetch")
        self.decoders: Decoders | None = None  # started with the first download to judge
        self.max_downloading = 2 * cfg.http.concurrency  # a queue for the threads, no more
        # downloads waiting for a decoder: room to keep fetching while the decoders start or
        # fall behind for a moment; past it the downloads wait (files in .tmp stay bounded)
        self.max_decoding = max(32, 4 * self.workers)
        self.inflight: dict[Future, _Job] = {}
        self.closing = False
        self.bar = tqdm(total=self.limit, initial=min(len(store.kept), self.limit), desc="scrape: kept", unit="img",
                        leave=False, disable=None if progress is None else not progress)  # None: on a terminal

    # -- the main loop -------------------------------------------------------------------
    def go(self, posts) -> None:
        s, store = self.summary, self.store
        for post in posts:
            s.listed += 1
            while self.inflight and len(store.kept) + len(self.inflight) >= self.limit:
                self._wait_one()  # enough in flight to reach max_images: wait for one
            if len(store.kept) >= self.limit:
                s.skipped["max_images"] += 1
                break
            if self.takedown.at_listing(post) is not None:  # before all else: never downloaded again
                s.skipped[OPTOUT] += 1
                continue
            key = store.key(post.source, post.post_id)
            if key in store.done and not self._changed(post, key):
                s.already_done += 1
                continue
            reason = prefilter(post, self.cfg)
            if reason is None and self.http is not None and not post.local_path:
                try:
                    self.http.check_url(post.file_url)
                except Rejected as e:
                    reason = e.reason
            if reason:
                s.skipped[reason] += 1
                store.append({"kind": "skipped", **self._ids(post), "reason": reason, "detail": "", "final": True,
                              "at": self.now()})
                continue
            self._download(_Job(post))
            while self._busy():
                self._wait_one()
        while self.inflight:
            self._wait_one()

    def _changed(self, post: Post, key: str) -> bool:
        """Whether a local file judged before under this name holds other bytes now: its stat (type,
        size, mtime) as recorded means no; else its bytes are hashed and compared with the recorded
        sha256 (the same: its new stat is recorded). A web post's bytes are the ones judged."""
        if post.local_path is None or post.sha256 is not None or post.stat is None:
            return False
        stat = list(post.stat)
        if self.store.same_stat(key, stat):
            return False
        rec = self.store.done[key]
        known = rec.get("image_id") or rec.get("sha256")
        if known is None or hash_local(post.local_path, self.cfg.http.max_bytes) != known:
            return True
        self.store.append({"kind": "seen", "source": post.source, "post_id": post.post_id, "stat": stat})
        return False

    def _busy(self) -> bool:
        decoding = sum(1 for job in self.inflight.values() if job.dl is not None)
        return len(self.inflight) - decoding >= self.max_downloading or decoding >= self.max_decoding

    def _download(self, job: _Job) -> None:
        if self.closing:  # no new work while stopping: the next run fetches it
            return
        fut = self.threads.submit(fetch, job.post, self.http, str(self.store.tmp), self.cfg.http.max_bytes,
                                  self._in_place(job))
        self.inflight[fut] = job

    def _wait_one(self) -> None:
        for fut in [f for f in self.inflight if f.cancelled()]:  # cancelled at shutdown: wait() never sees them
            del self.inflight[fut]
        if not self.inflight:
            return
        done, _ = wait(list(self.inflight), return_when=FIRST_COMPLETED)
        for fut in done:
            job = self.inflight.pop(fut)
            if job.dl is None:
                self._downloaded(job, fut)
            else:
                self._validated(job, fut)

    # -- one post's steps ----------------------------------------------------------------
    def _in_place(self, job: _Job) -> bool:
        """Whether the post's bytes stay in the user's file (a reference), not copied into .tmp."""
        return self.store.references and job.post.local_path is not None

    def _discard(self, job: _Job) -> None:
        """Drop the downloaded copy of a post not kept (never the user's own file)."""
        if not self._in_place(job):
            os.unlink(job.dl.path)

    def _downloaded(self, job: _Job, fut: Future) -> None:
        try:
            dl = fut.result()
        except Stopped:  # the run is stopping: the next one fetches it
            return
        except Rejected as e:
            return self._reject(job, e.reason, e.detail)
        except FetchFailed as e:
            return self._fail(job, e.reason, e.detail)
        post, job.dl = job.post, dl
        if post.sha256 and dl.sha256 != post.sha256:  # not the released bytes: never kept
            self._discard(job)
            return self._reject(job, "sha256_mismatch", f"{dl.url}: sha256 {dl.sha256}, the release says {post.sha256}",
                                dl.sha256)
        if self.takedown.refuses(post, dl.sha256) is not None:  # bytes an opt-out names
            self._discard(job)
            self.summary.skipped[OPTOUT] += 1
            return
        if dl.sha256 in self.store.kept:  # the same bytes as a kept image: judged already
            self._discard(job)
            return self._duplicate(job, dl)
        if self.decoders is None:
            self.decoders = Decoders(self.workers, self.cfg.filters)
        self.inflight[self.decoders.submit(dl.path)] = job

    def _validated(self, job: _Job, fut: Future) -> None:
        dl = job.dl
        try:
            info = fut.result()
        except DecoderCrashed as e:  # no verdict: the next run tries again
            self._discard(job)
            return self._fail(job, "decoder_crashed", f"{dl.url}: {e}")
        except Rejected as e:
            self._discard(job)
            if not dl.framed and e.reason in CUT_SHORT:
                # The connection closed without a Content-Length: the bytes may be cut short, so the
                # decoder's complaint is no verdict on the post. Fetch again; failing that, next run.
                self.http.record(dl.url, False, f"{dl.url} ended without a length and does not decode")
                if job.attempt < self.cfg.http.retries:
                    job.attempt, job.dl = job.attempt + 1, None
                    return self._download(job)
                return self._fail(job, "truncated", f"{dl.url}: the connection closed without a Content-Length and "
                                                    f"the file does not decode ({e}), {job.attempt + 1} attempts")
            self._record_unframed(dl)
            return self._reject(job, e.reason, e.detail, dl.sha256)
        self._record_unframed(dl)
        if dl.sha256 in self.store.kept:  # its twin was judged meanwhile
            self._discard(job)
            return self._duplicate(job, dl)
        post = job.post
        rel = (self.store.reference(post.local_path) if self._in_place(job)
               else self.store.commit(dl.path, dl.sha256, info.format))
        self.store.append({"kind": "kept", **self._ids(post), "image_id": dl.sha256, "pack": rel,
                           "offset": 0, "length": dl.size,
                           "page_url": post.page_url, "width": info.width, "height": info.height,
                           "format": info.format, "bytes": dl.size, "tags": list(post.tags), "rating": post.rating,
                           "artist": post.artist, "title": post.title, "character": post.character,
                           "fetched_at": self.now()})
        self.summary.kept_new += 1
        self.bar.update(1)

    def _record_unframed(self, dl: Download) -> None:
        """An unframed body counts as a success for the host only once it decoded."""
        if not dl.framed and self.http is not None:
            self.http.record(dl.url, True)

    @staticmethod
    def _ids(post: Post) -> dict:
        """What names a post in its records (a local file's stat too: how a change is noticed)."""
        ids = {"source": post.source, "post_id": post.post_id, "url": post.file_url}
        return {**ids, "stat": list(post.stat)} if post.stat is not None else ids

    def _reject(self, job: _Job, reason: str, detail: str, sha256: str | None = None) -> None:
        """A final verdict; with the sha256 of the bytes judged, when they were read."""
        self.summary.rejected[reason] += 1
        self.store.append({"kind": "rejected", **self._ids(job.post), "reason": reason, "detail": detail,
                           "final": True, "at": self.now(), **({"sha256": sha256} if sha256 else {})})

    def _fail(self, job: _Job, reason: str, detail: str) -> None:
        self.summary.failures[reason] += 1
        self.store.append({"kind": "rejected", **self._ids(job.post), "reason": reason, "detail": detail,
                           "final": False, "at": self.now()})
        log.warning("%s (retried next run)", detail)

    def _duplicate(self, job: _Job, dl: Download) -> None:
        """The same bytes as a kept image: the post that sorts first (source, post_id) is the one the
        manifest names, whichever finished first, so the manifest does not follow thread timing."""
        self.summary.duplicate += 1
        kept = self.store.kept[dl.sha256]
        post = job.post
        if (post.source, post.post_id) < (kept["source"], kept["post_id"]):
            self.store.append({**kept, **self._ids(post), "page_url": post.page_url, "tags": list(post.tags),
                               "rating": post.rating, "artist": post.artist, "title": post.title,
                               "character": post.character, "fetched_at": self.now()})
            self.store.append({"kind": "duplicate", "source": kept["source"], "post_id": kept["post_id"],
                               "url": kept.get("url"), "image_id": dl.sha256, "at": self.now()})
            return
        self.store.append({"kind": "duplicate", **self._ids(post), "image_id": dl.sha256, "at": self.now()})

    def close(self, failed: bool) -> None:
        """Start nothing new; judge and keep what was already downloaded, as a full run would."""
        self.closing = True
        if failed and self.http is not None:
            self.http.close()  # wakes threads waiting out a pause, so shutdown does not wait for it
        self.threads.shutdown(wait=True, cancel_futures=True)
        try:
            while self.inflight:
                try:
                    self._wait_one()
                except SourceError:
                    pass
        finally:
            if self.decoders is not None:
                self.decoders.shutdown()
            self.bar.close()


def scrape(cfg: ScrapeConfig, progress: bool | None = None) -> ScrapeSummary:
    """Run the scrape stage; resumable and idempotent. Writes cfg.out.*."""
    t0 = time.monotonic()
    summary = ScrapeSummary(source=cfg.source)
    requests = read_requests(cfg.optout)  # a malformed optout.csv stops the stage before anything changes
    extractor = Extractor.registry[cfg.source](cfg)
    http = extractor.http
    store = Store(cfg.out.images, references=cfg.folder_import == "reference")
    run = _Run(cfg, store, http, summary, progress, requests)
    takedown = run.takedown
    failed = True
    try:
        summary.removed = takedown.apply()
        run.go(extractor.posts())
        if summary.listed == 0:
            raise SourceError(f"{cfg.source}: no posts found"
                              + (f" for tags {cfg.tags!r} at {cfg.base_url}" if cfg.source in ("danbooru", "gelbooru") else ""))
        failed = False
    except SourceError as e:
        summary.stopped = str(e)
        raise
    finally:
        run.close(failed)
        summary.removed = takedown.removed
        orphans = store.remove_orphans()
        if orphans:
            log.info("removed %d stored files no journal line names", orphans)
        if failed and not store.changed:  # stopped before the store changed: every out stays as it was
            store.close()
            if http:
                http.close()
        else:
            _write_outs(cfg, store, extractor, summary, t0)
    return summary


def _write_outs(cfg: ScrapeConfig, store: Store, extractor: Extractor, summary: ScrapeSummary, t0: float) -> None:
    """Every out, to match the store (also after an error part way: what was kept is kept)."""
    http = extractor.http
    summary.kept_total = len(store.kept)
    summary.requests = http.requests_made if http else 0
    store.pack(cfg.pack_images)  # the loose images into packs: the outs name them there
    store.write_manifest(cfg.out.manifest)
    store.write_rejected(cfg.out.rejected)
    faces = extractor.recorded_faces()
    write_boxes(cfg.out.boxes, faces, faces.keys() & store.kept.keys())  # a set of the smaller, not of every kept image
    store.write_index()
    store.remove_orphans()  # the loose files just packed: only once the index names their packs
    store.close()
    if http:
        http.close()
    summary.seconds = time.monotonic() - t0
    atomic_write_json(cfg.out.summary, summary.as_dict())  # the run's time: reports/runs/scrape.json
    atomic_write_json(cfg.out.metrics, summary.metrics())
    write_run_report("scrape", {"seconds": round(summary.seconds, 2), "requests": summary.requests})
