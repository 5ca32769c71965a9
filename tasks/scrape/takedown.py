"""optout.csv applied in the scrape stage, the one place it takes effect: everything after scrape
reads the manifest, so an image removed here leaves the faces, crops, review queue, tags, training
dataset and release on the next `dvc repro` (detect rewrites the crop shards that held it).

- At the start of a run, every kept image a request names (by the kept post's artist, tags, URLs,
  source and post id, or the image's sha256; or by a duplicate post of the same bytes) is removed:
  first the audit lines (tasks.scrape.audit, tasks.artifacts.optout_log), then the journal line, then the file.
- While listing, a post a request names is skipped before any download (reason `optout`); a post
  whose image is known (the release source's sha256, or an earlier record) is matched by it too.
- After a download, bytes a request names, or bytes an earlier opt-out removed while its request
  still stands, are not kept (the same picture posted again elsewhere).
A request that is withdrawn (its row deleted) lets the posts back in on the next run.
The audit log always records when; the rejected table's `at` comes from the run's clock (none for
local files, so a rebuild of the same files gives the same table)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from tasks.artifacts.images import OPTOUT
from tasks.artifacts.optout import Request, Requests, Subject
from tasks.artifacts.optout_log import append_log, now
from tasks.scrape.audit import PreviousLock, log_entries
from tasks.scrape.sources import Post
from tasks.scrape.store import Store

log = logging.getLogger(__name__)


class Takedown:
    def __init__(self, requests: Requests, store: Store, log_path: str, root: str | Path = ".",
                 clock: Callable[[], str | None] = now):
        self.requests, self.store, self.log_path, self.root = requests, store, log_path, Path(root)
        self.clock = clock  # the `at` of rejected.parquet's rows (the run's: None for local files)
        self.removed = 0  # images removed this run
        self.blocked: dict[str, Request] = {}  # image_id -> the request its bytes fall under
        if requests:
            for image, rec in store.removed.items():
                hit = requests.match(Subject.of(rec))
                if hit is not None:
                    self.blocked[image] = hit

    def apply(self) -> int:
        """Remove the kept images the requests name; returns how many."""
        if not self.requests:
            return 0
        store, todo, seen = self.store, [], set()
        for image in sorted(store.kept):
            rec = store.kept[image]
            hit = self.requests.match(Subject.of(rec))
            if hit is not None:
                todo.append((rec, hit, None))
                seen.add(image)
        for key in sorted(store.done):  # posts whose bytes were a kept image's: their own URL or id names it
            rec = store.done[key]
            if rec["kind"] == "duplicate" and rec["image_id"] in store.kept and rec["image_id"] not in seen:
                hit = self.requests.match(Subject.of(rec))
                if hit is not None:
                    todo.append((store.kept[rec["image_id"]], hit, rec))
                    seen.add(rec["image_id"])
        self._remove(todo)
        return len(todo)

    def _remove(self, todo: list[tuple[dict, Request, dict | None]]) -> None:
        if not todo:
            return
        at = now()  # the audit log's when
        previous = PreviousLock.find(self.root, str(self.store.root))
        append_log(self.log_path, log_entries(todo, previous, at))
        for rec, hit, _ in todo:
            self.store.remove(rec["image_id"], hit.describe(), self.clock())
            self.blocked[rec["image_id"]] = hit
            log.info("optout: removed image %s (%s %s) under %s", rec["image_id"][:12], rec["source"], rec["post_id"],
                     hit.describe())
        self.removed += len(todo)

    def at_listing(self, post: Post) -> Request | None:
        """The request that names a listed post (it is then recorded as skipped), or None."""
        if not self.requests:
            return None
        key = self.store.key(post.source, post.post_id)
        image = post.sha256 or self.store.image_of.get(key)
        hit = self.requests.match(Subject(post.source, post.post_id, post.file_url, post.page_url, post.artist,
                                          post.tags, image))
        if hit is None and image is not None:
            hit = self.blocked.get(image)
        if hit is None:
            return None
        if image in self.store.kept:  # its listing names it now (new metadata, or a duplicate post's)
            kept = self.store.kept[image]
            same = self.store.key(kept["source"], kept["post_id"]) == key
            self._remove([(kept, hit, None if same else {"source": post.source, "post_id": post.post_id,
                                                         "url": post.file_url})])
        self.store.append({"kind": "skipped", "source": post.source, "post_id": post.post_id, "url": post.file_url,
                           "reason": OPTOUT, "detail": hit.describe(), "final": True, "at": self.clock(), "image_id": image,
                           "page_url": post.page_url, "artist": post.artist, "tags": list(post.tags)})
        return hit

    def refuses(self, post: Post, sha256: str) -> Request | None:
        """The request that a download's bytes fall under (they are then recorded, not kept), or None."""
        if not self.requests:
            return None
        hit = self.blocked.get(sha256) or self.requests.match(Subject(image_id=sha256))
        if hit is not None:
            self.store.append({"kind": "skipped", "source": post.source, "post_id": post.post_id,
                               "url": post.file_url, "reason": OPTOUT, "detail": hit.describe(), "final": True,
                               "at": self.clock(), "image_id": sha256, "page_url": post.page_url, "artist": post.artist,
                               "tags": list(post.tags)})
        return hit
