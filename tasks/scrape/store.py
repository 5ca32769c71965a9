"""The content-addressed image store and its append-only journal.

Layout under `scrape.out.images`:
    ab/abcdef…(sha256).jpg   — every kept image, named by the sha256 of its bytes
    index.jsonl              — the store's state at the end of the last run (below): part of the out
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
is written): checked again every run like any skip, so a withdrawn request lets it back in.
`seen` only records a local file's `stat` (tasks.scrape.local.signature) after its bytes were found
unchanged. A record of a local post carries the `stat` it had when listed.

The journal is this workspace's own history (timestamps, completion order: DVC ignores it, see
.dvcignore). What the store needs in order to honour a request and to fetch nothing twice travels
with the data instead: `index.jsonl`, in the store and so in its DVC out, is the store's state at
the end of each run (every post's last verdict, the kept, the removed), one sorted line per entry,
no `stat` (a machine's mtimes), so the same run gives the same bytes. Each run ends by writing it
and then an `index` line naming its sha256 to the journal. A journal whose last `index` line does
not name the index there (a fresh clone after `dvc pull`: no journal at all; a `dvc checkout` of
another version) is started afresh from the index: the index is what the files are."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from tasks.artifacts.images import EXT_FOR_FORMAT, OPTOUT, write_manifest, write_rejected
from tasks.fileio import atomic_write_text, sha256_bytes

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
STATE = ("kept", "done", "failed", "skipped", "removed", "image_of")  # the tables of index.jsonl, in its order

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
        self.stat: dict[str, list] = {}  # post key -> a local file's stat when it was last judged (journal only)
        self.index_path = self.root / INDEX
        self.changed = False  # whether this run changed the store (a record, a file in or out)
        self._load()
        self._journal = open(self.journal_path, "a", encoding="utf-8")

    @staticmethod
    def key(source: str, post_id: str) -> str:
        return f"{source}:{post_id}"

    def relpath(self, image_id: str, fmt: str) -> str:
        return f"{image_id[:2]}/{image_id}.{EXT_FOR_FORMAT[fmt]}"

    def _load(self) -> None:
        records = self._read_journal()
        index = self.index_path.read_bytes() if self.index_path.is_file() else None
        if index is not None:
            digest = sha256_bytes(index)
            marks = [r["sha256"] for r in records if r["kind"] == "index"]
            if not marks or marks[-1] != digest:  # pulled, checked out, or never run here: the index is what is here
                if records:
                    log.info("%s: the journal is not the image store's (%s): starting it afresh from %s",
                             self.root, "another version" if marks else "older than the index", INDEX)
                atomic_write_text(self.journal_path, index.decode("utf-8") + self._mark(digest))
                records = self._read_journal()
        for rec in records:
            if rec["kind"] != "index":
                self._note(rec)
        missing = 0
        for image, rec in list(self.kept.items()):
            if not (self.root / rec["path"]).exists():  # deleted by hand: forget it, fetch again
                missing += 1
                del self.kept[image]
                for k in [k for k, d in self.done.items() if d["kind"] == "kept" and d["image_id"] == image]:
                    del self.done[k]
        if missing:
            self.changed = True  # the manifest must follow
            log.warning("%d kept images are missing from %s and will be fetched again", missing, self.root)

    def _read_journal(self) -> list[dict]:
        if not self.journal_path.exists():
            return []
        data = self.journal_path.read_bytes()
        if data and not data.endswith(b"\n"):  # a line cut by a kill: drop it
            cut = data.rfind(b"\n") + 1
            with open(self.journal_path, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        return [json.loads(line) for line in data.decode("utf-8").splitlines()]

    @staticmethod
    def _mark(digest: str) -> str:
        return json.dumps({"kind": "index", "sha256": digest}) + "\n"

    def _note(self, rec: dict) -> None:
        kind = rec["kind"]
        if kind == "state":  # an entry of index.jsonl (a post whose last verdict is a kept image's record: by id)
            value = self.kept[rec["kept"]] if "kept" in rec else rec["value"]
            getattr(self, rec["table"])[rec["key"]] = value
            return
        k = self.key(rec["source"], rec["post_id"])
        if rec.get("stat") is not None:
            self.stat[k] = rec["stat"]
        if kind == "seen":
            return
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
        self._note(rec)
        if rec["kind"] != "seen":
            self.changed = True

    def commit(self, tmp_path: str, image_id: str, fmt: str) -> str:
        """Move a validated temp file into place; returns its relative path."""
        rel = self.relpath(image_id, fmt)
        dest = self.root / rel
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp_path, dest)
        self.changed = True
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

    def write_index(self) -> None:
        """index.jsonl: the state, sorted, without `stat`; then the journal's line naming it."""
        lines = []
        for table in STATE:
            entries = getattr(self, table)
            for key in sorted(entries):
                value = entries[key]
                entry = {"kind": "state", "table": table, "key": key}
                if table == "done" and value["kind"] == "kept" and self.kept.get(value["image_id"]) is value:
                    entry["kept"] = value["image_id"]  # the kept image's record, written once
                elif isinstance(value, dict):
                    entry["value"] = {f: v for f, v in value.items() if f != "stat"}
                else:
                    entry["value"] = value
                lines.append(json.dumps(entry, ensure_ascii=False, sort_keys=True, default=str) + "\n")
        text = "".join(lines)
        atomic_write_text(self.index_path, text)
        self._journal.write(self._mark(sha256_bytes(text.encode("utf-8"))))
        self._journal.flush()

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
        self.changed = self.changed or removed > 0
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
