"""The content-addressed image store and its append-only journal.

Layout under `scrape.out.images`:
    packs/000001.tar …       — the kept images, `scrape.pack_images` (4,000) a pack: plain ustar tar
                               files, members `<sha256>.<ext>` (tasks.scrape.packs)
    index.jsonl              — the store's state at the end of the last run (below): part of the out
    ab/abcdef…(sha256).jpg   — loose: an image kept during a run, named by the sha256 of its bytes,
                               until the run ends by packing it (none after a run that finished)
    journal.jsonl            — one JSON line per decision (kept / duplicate / rejected / skipped)
    .tmp/                    — downloads in flight; cleared at every start

So DVC tracks ~1 file per 4,000 images (docs/scale.md). A kept record places its image's bytes:
`pack` (a file under the store: a pack, or its loose file), `offset`, `length`; everything reads
them with tasks.artifacts.images.read_image.

With scrape.folder_import: reference, a local source's files are not copied at all: the kept record
names the user's file where it is (`pack` relative to the store, or absolute: a reference,
tasks.artifacts.images.is_reference), offset 0, and its image_id pins the bytes. Every read checks
them; a referenced file that is gone at a start is forgotten (fetched again if listed again), and a
post whose file now holds other bytes drops the image its old bytes made (`_supersede`). The user's
file is never written, moved or deleted, an opt-out included. Switching the mode: `copy` packs the
referenced images (their bytes checked) at the end of the next run; `reference` leaves images
already packed where they are (delete the store to import them again as references).

A file enters the store by os.replace from .tmp into its loose place, then its journal line is
written, so a SIGKILL at any moment leaves no partial file and loses no kept image. At the end of
the run (pack()) the loose images, by image_id, go to new packs (each a temp file, then os.replace),
after the members of the newest small non-full packs (pack(): a full pack, or a large one, is not
rewritten for a few new images); each pack written gets a `packed` journal line naming its members'
offsets; then the index, and only then are the loose files and the packs no record names any more
deleted (remove_orphans). A full pack is rewritten only by an opt-out (remove()), which takes the
member out of it. A kill at any point leaves a state the
next start repairs: a pack its records do not describe exactly (a member more or less, offsets with
a gap: tasks.scrape.packs.consistent) is rewritten from its own listing with just the members the
records name, and the new offsets recorded; a pack no record names, or a loose file, is deleted;
an image whose record still says loose is packed again (so never twice).

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
another version) is started afresh from the index: the index is what the files are.

Memory: the journal is replayed a line at a time and the index written a line at a time (and
hashed on the way), never whole in memory; the tables hold each record once (`done` and `kept` the
same object), as a slim Record (tasks.scrape.records; no `stat`, which Store.stat keeps packed). So
a run holds under 1 KB per post (tests/scrape/test_store_memory.py): less, but not a fixed cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tarfile
from pathlib import Path
from collections.abc import Mapping
from typing import Iterator

from tasks.artifacts.images import EXT_FOR_FORMAT, OPTOUT, is_reference, read_image, write_manifest, write_rejected
from tasks.fileio import atomic_open, sha256_file
from tasks.scrape import packs
from tasks.scrape.packs import PACKS, is_pack
from tasks.scrape.records import Record, packed_stat, slim

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
STATE = ("kept", "done", "failed", "skipped", "removed", "image_of")  # the tables of index.jsonl, in its order

def _placed(rec: dict) -> dict:
    """A kept record as it places its bytes: one of a store from before the packs names its loose
    file (`path`), which this run packs."""
    if "pack" not in rec:
        rec.update(pack=rec.pop("path"), offset=0, length=rec["bytes"])
    return rec


class Store:
    def __init__(self, root: str, references: bool = False):
        """`references`: a local file is kept where it is (scrape.folder_import: reference), not packed."""
        self.root = Path(root)
        self.references = references
        self.tmp = self.root / ".tmp"
        self.journal_path = self.root / "journal.jsonl"
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # leftovers of a killed run
        self.tmp.mkdir()
        self.kept: dict[str, Record] = {}  # image_id -> kept record (tasks.scrape.records)
        self.done: dict[str, Record] = {}  # post key -> last final record
        self.failed: dict[str, Record] = {}  # post key -> last transient failure
        self.skipped: dict[str, Record] = {}  # post key -> last filter verdict (checked again every run)
        self.image_of: dict[str, str] = {}  # post key -> the image its last record with bytes named
        self.removed: dict[str, Record] = {}  # image_id -> the opt-out record that took it out or refused it
        self.stat: dict[str, bytes | tuple] = {}  # post key -> a local file's stat when last judged (packed_stat)
        self.index_path = self.root / INDEX
        self.changed = False  # whether this run changed the store (a record, a file in or out)
        self._load()
        self._journal = open(self.journal_path, "a", encoding="utf-8")
        self._check()

    @staticmethod
    def key(source: str, post_id: str) -> str:
        return f"{source}:{post_id}"

    def same_stat(self, key: str, stat: list) -> bool:
        """Whether post `key` was last judged with this stat (a local file's: tasks.scrape.local.signature)."""
        return self.stat.get(key) == packed_stat(stat)

    def relpath(self, image_id: str, fmt: str) -> str:
        return f"{image_id[:2]}/{image_id}.{EXT_FOR_FORMAT[fmt]}"

    def reference(self, local_path: str) -> str:
        """How a kept record names a user's file left in place: relative to the store when the folder
        was given relative (the same on every machine with the same layout), else absolute."""
        if os.path.isabs(local_path):
            return os.path.normpath(local_path)
        return Path(os.path.relpath(os.path.abspath(local_path), os.path.abspath(self.root))).as_posix()

    def _loose(self, rec: dict) -> bool:
        """Whether a kept image waits to be packed: a loose file, or a reference when copying."""
        return not is_pack(rec["pack"]) and not (self.references and is_reference(rec["pack"]))

    def _load(self) -> None:
        """Replay the journal into the tables, a line at a time; first, a journal whose last `index`
        line does not name the index here is replaced by one started afresh from the index."""
        self._cut()
        if self.index_path.is_file():
            digest = sha256_file(self.index_path)
            marked, lines = self._last_mark()
            if marked != digest:  # pulled, checked out, or never run here: the index is what is here
                if lines:
                    log.info("%s: the journal is not the image store's (%s): starting it afresh from %s",
                             self.root, "another version" if marked else "older than the index", INDEX)
                with atomic_open(self.journal_path, "wb") as out, open(self.index_path, "rb") as index:
                    shutil.copyfileobj(index, out)
                    out.write(self._mark(digest).encode("utf-8"))
        for rec in self._read_journal():
            if rec["kind"] != "index":
                self._note(rec)

    def _check(self) -> None:
        """Every kept image where its record says: a pack its records do not describe (a kill while
        packing or taking an image out) is repaired from its own listing; an image not there (deleted
        by hand) is forgotten, to be fetched again; a loose image makes this run pack it."""
        missing = [image for image, rec in self.kept.items()
                   if not is_pack(rec["pack"]) and not (self.root / rec["pack"]).is_file()]
        for rel, recs in sorted(self._packs().items()):
            if not packs.consistent(self.root, rel, recs):
                missing += self._repair(rel, recs)
        for image in missing:
            self._forget(image)
        if missing:
            self.changed = True  # the manifest must follow
            log.warning("%d kept images are missing from %s (or the files it references are gone) and will be "
                        "fetched again", len(missing), self.root)
        if any(self._loose(rec) for rec in self.kept.values()):
            self.changed = True  # loose images from a run that did not finish (or references to copy): packed

    def _forget(self, image: str) -> None:
        """An image whose bytes are not here any more: no longer kept, and the posts that named it
        (kept or a duplicate of it) judged again when listed."""
        self.kept.pop(image, None)
        for k in [k for k, d in self.done.items() if d["kind"] in ("kept", "duplicate") and d.get("image_id") == image]:
            del self.done[k]

    def _supersede(self, k: str, rec: dict) -> None:
        """A new verdict on post `k` after its bytes changed: the image its old bytes made, when the
        store only references the post's file, is not there any more."""
        old = self.image_of.get(k)
        if old is not None and old != rec.get("image_id") and old in self.kept and is_reference(self.kept[old]["pack"]):
            self._forget(old)

    def _packs(self) -> dict[str, list[dict]]:
        """pack -> the kept records placing their image in it."""
        out: dict[str, list[dict]] = {}
        for rec in self.kept.values():
            if is_pack(rec["pack"]):
                out.setdefault(rec["pack"], []).append(rec)
        return out

    def _repair(self, rel: str, recs: list[dict]) -> list[str]:
        """Rewrite a pack that its records do not describe with the members they name, in the
        order it holds them; returns the images it does not hold."""
        try:
            there = packs.listing(self.root, rel)
        except (OSError, tarfile.TarError) as e:
            log.warning("%s: %s: not a readable pack (%s)", self.root, rel, e)
            there = {}
        named = sorted((rec for rec in recs if rec["image_id"] in there),
                       key=lambda rec: there[rec["image_id"]]["offset"])
        log.info("%s: %s holds %d members, its records name %d: rewriting it with those", self.root, rel,
                 len(there), len(named))
        self._write_pack(rel, [(rec, there[rec["image_id"]]) for rec in named])
        return [rec["image_id"] for rec in recs if rec["image_id"] not in there]

    def _write_pack(self, rel: str, members: list[tuple[dict, dict]]) -> None:
        """Write pack `rel` from these members (none: delete it), then the journal line placing them."""
        if not members:
            (self.root / rel).unlink(missing_ok=True)
            return
        placed = packs.write_pack(self.root, rel, members)
        self.append({"kind": "packed", "pack": rel, "members": placed})

    def pack(self, pack_images: int) -> int:
        """Pack the loose images (by image_id) into new packs of pack_images, the last one not full.
        Before them go the members of the newest non-full packs (in their order), each while it holds
        at most twice the images gathered so far: its old pack, no longer named by a record, goes with
        remove_orphans. So a full pack is never rewritten, nor is a large non-full one for a few new
        images; an image is rewritten only into a group at least 1.5x its pack's size (so O(log
        pack_images) times before its pack is full), and the non-full packs stay ~log2(pack_images)
        however many runs add images. Returns the number of images packed."""
        loose = sorted((rec for rec in self.kept.values() if self._loose(rec)), key=lambda r: r["image_id"])
        for rec in [r for r in loose if is_reference(r["pack"])]:  # copying what was referenced: checked first
            try:
                read_image(self.root, rec)
            except OSError as e:
                log.warning("%s: not copied into the store, forgotten (fetched again when listed)", e)
                self._forget(rec["image_id"])
                loose.remove(rec)
        if not loose:
            return 0
        by_pack = self._packs()
        number = max(map(packs.pack_number, by_pack), default=0)
        gathered: list[dict] = []
        for rel in sorted((p for p, recs in by_pack.items() if len(recs) < pack_images), reverse=True):
            if len(by_pack[rel]) > 2 * (len(loose) + len(gathered)):
                break
            gathered = sorted(by_pack[rel], key=lambda r: r["offset"]) + gathered
        members = [(r, r) for r in gathered + loose]  # each read before its `packed` line moves it
        for start in range(0, len(members), pack_images):
            number += 1
            self._write_pack(packs.pack_name(number), members[start:start + pack_images])
        log.info("%s: packed %d images%s", self.root, len(loose),
                 f" (and moved {len(gathered)} from non-full packs)" if gathered else "")
        return len(loose)

    def _cut(self) -> None:
        """Drop a last line cut short by a kill (no newline at its end)."""
        if not self.journal_path.exists():
            return
        with open(self.journal_path, "r+b") as f:
            end = f.seek(0, os.SEEK_END)
            at = end
            while at > 0:  # back from the end to the last newline, a block at a time
                start = max(0, at - (1 << 16))
                f.seek(start)
                block = f.read(at - start)
                if at == end and block.endswith(b"\n"):
                    return
                newline = block.rfind(b"\n")
                if newline >= 0:
                    f.truncate(start + newline + 1)
                    return
                at = start
            f.truncate(0)

    def _lines(self) -> Iterator[bytes]:
        if not self.journal_path.exists():
            return
        with open(self.journal_path, "rb") as f:
            yield from f

    def _last_mark(self) -> tuple[str | None, int]:
        """The sha256 the journal's last `index` line names (None: no such line), and its line count."""
        marked, n = None, 0
        for n, line in enumerate(self._lines(), start=1):
            if b'"index"' in line:  # only such a line can be one: parsed to make sure
                rec = json.loads(line)
                if rec["kind"] == "index":
                    marked = rec["sha256"]
        return marked, n

    def _read_journal(self) -> Iterator[dict]:
        """The journal's records, one line at a time (never the whole journal in memory)."""
        for line in self._lines():
            yield json.loads(line)

    @staticmethod
    def _mark(digest: str) -> str:
        return json.dumps({"kind": "index", "sha256": digest}) + "\n"

    def _note(self, rec: dict) -> None:
        kind = rec["kind"]
        if kind == "state":  # an entry of index.jsonl (a post whose last verdict is a kept image's record: by id)
            value = self.kept[rec["kept"]] if "kept" in rec else rec["value"]
            if isinstance(value, dict):  # a record (a kept image's, named by its id, is one already)
                value = slim(_placed(value) if rec["table"] == "kept" else value)
            elif type(value) is str:  # image_of's: an image_id
                value = sys.intern(value)
            getattr(self, rec["table"])[sys.intern(rec["key"])] = value  # a post's key, one string for its tables
            return
        if kind == "packed":  # a pack written: where its members' bytes are now (its name one string for all)
            pack = sys.intern(rec["pack"])
            for image, offset, length in rec["members"]:
                if image in self.kept:
                    self.kept[image].update(pack=pack, offset=offset, length=length)
            return
        k = self.key(rec["source"], rec["post_id"])
        if rec.get("stat") is not None:
            self.stat[k] = packed_stat(rec["stat"])
        if kind == "seen":
            return
        rec = slim(_placed(rec) if kind == "kept" else rec)
        if kind in ("kept", "duplicate", "rejected"):
            self._supersede(k, rec)
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
        k = self.key(rec["source"], rec["post_id"]) if "source" in rec else None
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
        """Take a kept image out (an opt-out): the journal line first, then its bytes: a loose file
        is deleted, a pack rewritten without the member (and the others' new offsets journaled).
        A kill in between leaves a file no record names (remove_orphans deletes it) or a pack its
        records do not describe (the next start rewrites it with the members they name)."""
        rec = self.kept[image_id]
        out = {"kind": "skipped", "source": rec["source"], "post_id": rec["post_id"], "url": rec.get("url"),
               "reason": OPTOUT, "detail": detail, "final": True, "at": at, "image_id": image_id, "removed": True,
               "pack": rec["pack"], **{f: rec.get(f) for f in ("page_url", "artist", "tags", "title", "character")}}
        self.append(out)
        if is_pack(rec["pack"]):
            rest = sorted(self._packs().get(rec["pack"], []), key=lambda r: r["offset"])
            self._write_pack(rec["pack"], [(r, r) for r in rest])  # each read before the `packed` line moves it
        elif not is_reference(rec["pack"]):  # the user's own file is never deleted
            (self.root / rec["pack"]).unlink(missing_ok=True)
        return out

    def write_index(self) -> None:
        """index.jsonl: the state, sorted, without `stat`, written a line at a time; then the
        journal's line naming it."""
        digest = hashlib.sha256()
        with atomic_open(self.index_path, "wb") as f:
            for table in STATE:
                entries = getattr(self, table)
                for key in sorted(entries):
                    value = entries[key]
                    entry = {"kind": "state", "table": table, "key": key}
                    if table == "done" and value["kind"] == "kept" and self.kept.get(value["image_id"]) is value:
                        entry["kept"] = value["image_id"]  # the kept image's record, written once
                    elif isinstance(value, Mapping):
                        entry["value"] = {f: v for f, v in value.items() if f != "stat"}
                    else:
                        entry["value"] = value
                    line = (json.dumps(entry, ensure_ascii=False, sort_keys=True, default=str) + "\n").encode("utf-8")
                    digest.update(line)
                    f.write(line)
        self._journal.write(self._mark(digest.hexdigest()))
        self._journal.flush()

    def close(self) -> None:
        self._journal.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def remove_orphans(self) -> int:
        """Delete stored files that no kept record names: a loose image moved in but not journaled
        (a kill between move and journal), or packed since; a pack written but not journaled, or a
        temp file of one. Empty loose directories go too."""
        wanted = {rec["pack"] for rec in self.kept.values()}
        removed = 0
        for shard in sorted(self.root.iterdir()):
            if shard.is_dir() and (len(shard.name) == 2 or shard.name == PACKS):
                for f in sorted(shard.iterdir()):
                    if f"{shard.name}/{f.name}" not in wanted:
                        f.unlink()
                        removed += 1
                if len(shard.name) == 2 and not any(shard.iterdir()):
                    shard.rmdir()
        self.changed = self.changed or removed > 0
        return removed

    def write_manifest(self, path: str) -> int:
        return write_manifest(path, self.kept.values())

    def write_rejected(self, path: str) -> int:
        """Every post not kept, by its last verdict: skipped, rejected (final) or failed (transient)."""
        records = []
        for table in (self.done, self.failed, self.skipped):
            for rec in table.values():
                if rec["kind"] not in ("rejected", "skipped"):
                    continue
                if rec.get("final") is not True:  # a transient failure: its row says so (few: a copy each)
                    kind = rec["kind"] if rec.get("final", True) else "failed"
                    rec = {**rec, "kind": kind, "final": kind != "failed"}
                records.append(rec)
        return write_rejected(path, records)
