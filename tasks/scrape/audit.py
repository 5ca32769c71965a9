"""What the audit line of a takedown says about the artifacts (the log's format:
tasks.artifacts.optout_log): which artifact versions still held the removed image.

Those versions are the previous `dvc.lock`'s: the scrape stage removes an image before any later
stage has run again, so the lock still describes the artifacts that contained it. Each out of the
lock is opened at that version, from the workspace when its md5 still matches, else from DVC's
cache (the stage's own outs: DVC deletes them before it runs the stage), and looked into:
the manifest, faces, detect's per-image table, tags, the training dataset and a release hold rows;
the image store and the crops directory hold files (the `.dir` listing names the file and its
cache object); the review queue lists face_ids; a generator records the data fingerprint of the
training dataset it learned from. Any other out of a stage whose deps include a version that held
the image is listed as derived from it (the review sheets, training checkpoints, samples, the web
model). This reads files no stage declares as deps, on purpose: it is a record of what existed,
not an input of the data (and the log is no deterministic artifact: it holds the time)."""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import logging
import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from tasks.artifacts.faces import FACES_TABLE, IMAGES_TABLE
from tasks.artifacts.images import MANIFEST_TABLE
from tasks.artifacts.optout_log import LOG_FORMAT
from tasks.artifacts.release import RELEASE_TABLE
from tasks.artifacts.tags import TAGS_TABLE
from tasks.artifacts.trainset import EXPORT_TABLE, FINGERPRINT_KEY
from tasks.fileio import TABLE_KEY, file_hexdigest, safetensors_metadata

log = logging.getLogger(__name__)

LOCK = "dvc.lock"
IMAGE_TABLES = {MANIFEST_TABLE: "image_id", IMAGES_TABLE: "image_id", RELEASE_TABLE: "sha256"}  # table -> its image column
FACE_TABLES = {FACES_TABLE: "face_id", TAGS_TABLE: "face_id", EXPORT_TABLE: "face_id"}  # table -> its face column


def cache_dir(root: Path) -> Path:
    """DVC's local cache: `cache.dir` of .dvc/config(.local), else .dvc/cache."""
    found = None
    for name in ("config", "config.local"):
        section = None
        p = root / ".dvc" / name
        if not p.is_file():
            continue
        for line in p.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]").strip().strip("'\"")
            elif section == "cache" and (m := re.match(r"dir\s*=\s*(.+)", line)):
                found = (root / ".dvc" / m.group(1).strip()).resolve()
    return found or root / ".dvc" / "cache"


def _git_commit(root: Path) -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class PreviousLock:
    """The artifact versions of a dvc.lock, opened as they were."""

    def __init__(self, root: Path, lock: dict, lock_bytes: bytes):
        self.root = root
        self.cache = cache_dir(root)
        self.sha256 = hashlib.sha256(lock_bytes).hexdigest()
        self.git_commit = _git_commit(root)
        self.stages: dict[str, dict] = {}
        for name, st in (lock.get("stages") or {}).items():
            outs = [(o["path"], o.get("md5")) for o in st.get("outs") or [] if o.get("md5")]
            deps = [(d["path"], d.get("md5")) for d in st.get("deps") or [] if d.get("md5")]
            self.stages[name] = {"outs": outs, "deps": deps}

    @classmethod
    def find(cls, root: str | Path, store_dir: str) -> "PreviousLock | None":
        """The lock at `root` if it names the image store `store_dir` as an out (else it is some
        other project's, or none: nothing to say about versions)."""
        root = Path(root)
        path = root / LOCK
        if not path.is_file():
            return None
        raw = path.read_bytes()
        try:
            lock = yaml.safe_load(raw) or {}
        except yaml.YAMLError:
            log.warning("optout audit: %s is not valid YAML: artifact versions not recorded", path)
            return None
        prev = cls(root, lock, raw)
        try:
            want = (Path(store_dir) if Path(store_dir).is_absolute() else (Path.cwd() / store_dir)).resolve()
        except OSError:
            return None
        if not any((root / p).resolve() == want for st in prev.stages.values() for p, _ in st["outs"]):
            return None
        return prev

    def object(self, md5: str) -> Path:
        return self.cache / "files" / "md5" / md5[:2] / md5[2:]

    def open_file(self, path: str, md5: str) -> Path | None:
        """The file as the lock recorded it: the workspace copy if unchanged, else the cache object."""
        ws = self.root / path
        if ws.is_file() and file_hexdigest(ws, "md5") == md5:
            return ws
        obj = self.object(md5)
        return obj if obj.is_file() else None

    def listing(self, md5: str) -> dict[str, str] | None:
        """relpath -> md5 of a directory version (its `.dir` object in the cache)."""
        obj = self.object(md5)
        if not obj.is_file():
            return None
        try:
            return {e["relpath"]: e["md5"] for e in json.loads(obj.read_text(encoding="utf-8"))}
        except (ValueError, KeyError, TypeError):
            return None

    def contained(self, images: dict[str, str]) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
        """For each image (image_id -> the file of the store holding it: its pack): the artifact versions that held it,
        and its faces as the previous faces table knew them."""
        hits: dict[str, list[dict]] = {i: [] for i in images}
        faces_of: dict[str, set[str]] = collections.defaultdict(set)
        shard_of: dict[str, str] = {}
        fingerprints: dict[str, set[str]] = collections.defaultdict(set)  # train data fingerprint -> images
        held: dict[tuple[str, str], set[str]] = collections.defaultdict(set)  # (path, md5) -> images
        outs = [(stage, p, m) for stage, st in self.stages.items() for p, m in st["outs"]]

        def hit(stage, path, md5, image, **what):
            hits[image].append({"stage": stage, "path": path, "md5": md5, **what})
            held[(path, md5)].add(image)

        # 1. tables and files that name images
        tables: dict[tuple[str, str], tuple[str, Path]] = {}
        for stage, path, md5 in outs:
            if md5.endswith(".dir"):
                listing = self.listing(md5)
                for image, rel in images.items():
                    if listing and rel in listing:
                        hit(stage, path, md5, image, file=rel, object=listing[rel])
                continue
            if not path.endswith(".parquet"):
                continue
            f = self.open_file(path, md5)
            if f is None:
                continue
            try:
                meta = pq.read_schema(f).metadata or {}
            except Exception:  # noqa: BLE001 - not a Parquet file after all: nothing to say
                continue
            table = meta.get(TABLE_KEY, b"").decode()
            tables[(path, md5)] = (table, f)
            if table in IMAGE_TABLES:
                col = IMAGE_TABLES[table]
                counts = collections.Counter(i for i in pq.read_table(f, columns=[col]).column(col).to_pylist()
                                             if i in images)
                for image, n in sorted(counts.items()):
                    hit(stage, path, md5, image, rows=n)
            if table == FACES_TABLE:
                t = pq.read_table(f, columns=["face_id", "image_id", "shard"]).to_pylist()
                for r in t:
                    if r["image_id"] in images:
                        faces_of[r["image_id"]].add(r["face_id"])
                        if r["shard"]:
                            shard_of[r["face_id"]] = r["shard"]
        image_of = {fid: image for image, fids in faces_of.items() for fid in fids}
        # 2. what names faces: face tables, the review queue, the crop shards
        for stage, path, md5 in outs:
            counts: collections.Counter = collections.Counter()
            if (path, md5) in tables and tables[(path, md5)][0] in FACE_TABLES:
                table, f = tables[(path, md5)]
                t = pq.read_table(f, columns=[FACE_TABLES[table]])
                counts.update(image_of[x] for x in t.column(0).to_pylist() if x in image_of)
                if table == EXPORT_TABLE and counts:
                    fp = (pq.read_schema(f).metadata or {}).get(FINGERPRINT_KEY, b"").decode()
                    for image in counts:
                        fingerprints[fp].add(image)
                for image, n in sorted(counts.items()):
                    hit(stage, path, md5, image, faces=n)
            elif path.endswith(".csv"):
                f = self.open_file(path, md5)
                if f is None:
                    continue
                try:
                    rows = csv.DictReader(io.StringIO(f.read_text(encoding="utf-8-sig")))
                    counts.update(image_of[r["face_id"].strip()] for r in rows
                                  if (r.get("face_id") or "").strip() in image_of)
                except (UnicodeDecodeError, csv.Error, AttributeError):
                    continue
                for image, n in sorted(counts.items()):
                    hit(stage, path, md5, image, faces=n)
            elif md5.endswith(".dir") and shard_of:
                listing = self.listing(md5) or {}
                for image, fids in faces_of.items():
                    shards = sorted({shard_of[x] for x in fids if x in shard_of and shard_of[x] in listing})
                    if shards:
                        hit(stage, path, md5, image, shards={s: listing[s] for s in shards})
        # 3. models that record the data they learned from
        for stage, path, md5 in outs:
            if not path.endswith(".safetensors") or not fingerprints:
                continue
            f = self.open_file(path, md5)
            meta = safetensors_metadata(f) if f is not None else {}
            fp = meta.get("data_fingerprint")
            for image in sorted(fingerprints.get(fp, ())):
                hit(stage, path, md5, image, trained_on=True, run=meta.get("run"), data_fingerprint=fp)
        # 4. everything else made from a version that held it
        changed = True
        while changed:
            changed = False
            for stage, st in self.stages.items():
                sources = {img for dep in st["deps"] for img in held.get(dep, ())}
                for path, md5 in st["outs"]:
                    if path.endswith(".json") or (path.endswith(".csv") and not path.endswith("queue.csv")):
                        continue  # metrics and plots: counts, not content
                    for image in sorted(sources - held.get((path, md5), set())):
                        deps = sorted(p for p, m in st["deps"] if image in held.get((p, m), ()))
                        hit(stage, path, md5, image, derived_from=deps)
                        changed = True
        return hits, {i: sorted(v) for i, v in faces_of.items()}


def log_entries(removals: list[tuple[dict, object, dict | None]], previous: PreviousLock | None,
                at: str) -> list[dict]:
    """One line per removed image: (kept record, the request, the post that matched when another
    post than the kept one did)."""
    images = {rec["image_id"]: rec["pack"] for rec, _, _ in removals}
    hits, faces = previous.contained(images) if previous is not None else ({}, {})
    version = ({"dvc_lock_sha256": previous.sha256, "git_commit": previous.git_commit} if previous is not None
               else None)
    out = []
    for rec, request, via in removals:
        image = rec["image_id"]
        entry = {"format": LOG_FORMAT, "at": at, "action": "removed", "image_id": image,
                 "request": request.as_dict(),
                 "post": {k: rec.get(k) for k in ("source", "post_id", "url", "page_url", "artist")},
                 "store_path": rec["pack"], "faces": faces.get(image, []), "previous": version,
                 "contained_in": hits.get(image, [])}
        if via is not None:
            entry["matched_post"] = {k: via.get(k) for k in ("source", "post_id", "url")}
        if previous is None:
            entry["note"] = "no dvc.lock names this image store: artifact versions unknown"
        out.append(entry)
    return out


