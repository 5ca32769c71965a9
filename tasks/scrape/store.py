"""The content-addressed image store and its append-only journal.

Layout under `scrape.out.images`:
    ab/abcdef…(sha256).jpg   — every kept image, named by the sha256 of its bytes
    journal.jsonl            — one JSON line per decision (kept / duplicate / rejected / skipped)
    .tmp/                    — downloads in flight; cleared at every start

A file enters the store by os.replace from .tmp, then its journal line is written, so a
SIGKILL at any moment leaves no partial file and loses no kept image.

Journal kinds: `kept` and `duplicate`, and `rejected` with `final` true, are decisions: the
post is done. `rejected` with `final` false is a transient failure, retried next run.
`skipped` is a filter's verdict on the listing's metadata (rating, blocklist, size...):
recorded, so opt-outs are counted over all runs, but checked again every run, so a change of
scrape.filters takes effect. A post optout.csv names is `skipped` with reason `optout`, and so is a
kept image an opt-out takes out of the store (`removed: true`; its file is deleted after the line
is written): checked again every run like any skip, so a withdrawn request lets it back in."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from tasks.artifacts.images import EXT_FOR_FORMAT, OPTOUT, write_manifest, write_rejected

log = logging.getLogger(__name__)

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
        self.skipped: dict[str, dict] = {}  # post key -> last filter verdict (checked again every run)
        self.image_of: dict[str, str] = {}  # post key -> the image its last record with bytes named
        self.removed: dict[str, dict] = {}  # image_id -> the opt-out record that took it out or refused it
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
        records = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        taken_out = {rec["image_id"]: i for i, rec in enumerate(records)  # removed by a later opt-out line
                     if rec["kind"] == "skipped" and rec.get("removed") and rec.get("image_id")}
        missing = 0
        for i, rec in enumerate(records):
            k = self.key(rec["source"], rec["post_id"])
            if rec["kind"] == "kept" and not (self.root / rec["path"]).exists():
                if taken_out.get(rec["image_id"], -1) < i:
                    missing += 1  # deleted by hand: forget it, fetch again
                continue
            self._note(k, rec)
        if missing:
            log.warning("%d kept images are missing from %s and will be fetched again", missing, self.root)

    def _note(self, k: str, rec: dict) -> None:
        kind = rec["kind"]
        if rec.get("image_id"):
            self.image_of[k] = rec["image_id"]
        if kind == "kept":
            self.kept[rec["image_id"]] = rec
            self.removed.pop(rec["image_id"], None)
        if kind == "skipped":
            if rec.get("reason") == OPTOUT and rec.get("image_id"):
                self.removed[rec["image_id"]] = rec
                if rec.get("removed"):
                    self.kept.pop(rec["image_id"], None)
                    self.done.pop(k, None)
            self.skipped[k] = rec
            self.failed.pop(k, None)
            return
        self.skipped.pop(k, None)
        if kind == "rejected" and not rec.get("final"):
            self.failed[k] = rec
        else:
            self.done[k] = rec
            self.failed.pop(k, None)

    def append(self, rec: dict) -> None:
        k = self.key(rec["source"], rec["post_id"])
        last = self.skipped.get(k)
        if (rec["kind"] == "skipped" and last is not None and last["reason"] == rec["reason"]
                and last.get("detail", "") == rec.get("detail", "")):
            return  # the same verdict as last run: one line is enough
        self._journal.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        self._journal.flush()
        self._note(k, rec)

    def commit(self, tmp_path: str, image_id: str, fmt: str) -> str:
        """Move a validated temp file into place; returns its relative path."""
        rel = self.relpath(image_id, fmt)
        dest = self.root / rel
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp_path, dest)
        return rel

    def remove(self, image_id: str, detail: str, at: str) -> dict:
        """Take a kept image out (an opt-out): the journal line first, then the file, so a kill
        in between leaves a file no record names, which remove_orphans deletes."""
        rec = self.kept[image_id]
        out = {"kind": "skipped", "source": rec["source"], "post_id": rec["post_id"], "url": rec.get("url"),
               "reason": OPTOUT, "detail": detail, "final": True, "at": at, "image_id": image_id, "removed": True,
               "path": rec["path"], **{f: rec.get(f) for f in ("page_url", "artist", "tags", "title", "character")}}
        self.append(out)
        (self.root / rec["path"]).unlink(missing_ok=True)
        return out

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
        return write_manifest(path, list(self.kept.values()))

    def write_rejected(self, path: str) -> int:
        """Every post not kept, by its last verdict: skipped, rejected (final) or failed (transient)."""
        records = []
        for rec in [*self.done.values(), *self.failed.values(), *self.skipped.values()]:
            if rec["kind"] in ("rejected", "skipped"):
                kind = rec["kind"] if rec.get("final", True) else "failed"
                records.append({**rec, "kind": kind, "final": kind != "failed"})
        return write_rejected(path, records)
