"""Provenance, both ways: where a face or an image comes from and which artifacts and models hold
it; and which images, faces and models hold the work of an artist (or of a tag, a URL, a post).

    python -m tasks.tools.provenance <face_id | image_id | a unique prefix of one>   [--json] [--params FILE]
    python -m tasks.tools.provenance --artist NAME | --tag TAG | --url URL | --post SOURCE POST_ID

It reads the artifacts as they are in the workspace (paths from params.yaml), each named with the
md5 `dvc.lock` records for it (or `(not in dvc.lock)` / `(changed since dvc.lock)`): the scrape
manifest, the faces table and its crop shards, the review decisions and queue, the tags, the
training dataset, the release, and the models: the generator holds a face when the data
fingerprint it records is the training dataset's and the face is in that dataset's train split;
the run directories under `train.out.dir/runs` whose identity names that fingerprint hold it in
their checkpoints, and every stage dvc.lock shows consuming that generator version (the web model)
is made from it. Images an opt-out removed are answered from the audit log: when, under which
row, and which artifact versions still held them then."""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from tasks.artifacts.images import read_image
from tasks.artifacts.optout import Subject, name_key, read_requests, url_key
from tasks.artifacts.optout_log import read_log
from tasks.errors import ConfigError, MoeflowError, one_line_errors
from tasks.fileio import file_hexdigest, safetensors_metadata, sha256_bytes
from tasks.params.all import load_params

log = logging.getLogger(__name__)
HEX = re.compile(r"[0-9a-f]{6,64}")


class Workspace:
    """The artifacts of one project, read once."""

    def __init__(self, params, root: Path = Path(".")):
        self.p, self.root = params, root
        s = params.scrape
        self.lock = self._lock()
        self.manifest = {r["image_id"]: r for r in self._rows(s.out.manifest)}
        self.faces = {r["face_id"]: r for r in self._rows(params.detect.out.faces)}
        self.faces_of: dict[str, list[str]] = collections.defaultdict(list)
        for fid in sorted(self.faces):
            self.faces_of[self.faces[fid]["image_id"]].append(fid)
        self.tags = {r["face_id"]: r["attributes"] for r in self._rows(params.tag.out.tags, ["face_id", "attributes"])}
        train = self._table(params.train.out.data, ["face_id", "split"])
        self.train = dict(zip(train.column("face_id").to_pylist(), train.column("split").to_pylist())) if train else {}
        self.fingerprint = ((train.schema.metadata or {}).get(b"moeflow.fingerprint", b"").decode() or None) if train else None
        self.release = {r["face_id"] for r in self._rows(params.release.out.faces, ["face_id"])}
        self.queue = self._queue(params.review.out.queue)
        self.verdicts = self._verdicts()
        gen = Path(params.train.out.dir) / "generator.safetensors"
        self.generator_path = gen
        self.generator = safetensors_metadata(gen) if gen.is_file() else None
        self.runs = self._runs(Path(params.train.out.dir) / "runs")
        self.removed = collections.defaultdict(list)
        for e in read_log(s.out.optout_log):
            self.removed[e.get("image_id")].append(e)
        try:
            self.requests = read_requests(s.optout)
        except MoeflowError as e:
            log.warning("provenance: %s", str(e).splitlines()[0])
            self.requests = None

    # -- loading ----------------------------------------------------------------------------------
    def _table(self, path: str, columns: list[str] | None = None):
        p = Path(path)
        return pq.read_table(p, columns=columns) if p.is_file() else None

    def _rows(self, path: str, columns: list[str] | None = None) -> list[dict]:
        t = self._table(path, columns)
        return t.to_pylist() if t is not None else []

    def _lock(self) -> dict[str, tuple[str, str]]:
        """path -> (stage, md5) for every out of dvc.lock; and the stages' deps for `consumers`."""
        path = self.root / "dvc.lock"
        self.lock_deps: dict[str, list[tuple[str, str]]] = {}
        if not path.is_file():
            return {}
        lock = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        out = {}
        for stage, st in (lock.get("stages") or {}).items():
            for o in st.get("outs") or []:
                out[o["path"]] = (stage, o.get("md5"))
            self.lock_deps[stage] = [(d["path"], d.get("md5")) for d in st.get("deps") or []]
        return out

    def _queue(self, path: str) -> set[str]:
        from tasks.artifacts.decisions import QUEUE_COLUMNS, read_csv

        if not Path(path).is_file():
            return set()
        try:
            table = read_csv(path, QUEUE_COLUMNS)
        except MoeflowError as e:
            log.warning("provenance: %s", e)
            return set()
        return {values.get("face_id", "").strip().lower() for _, values in table.rows}

    def _verdicts(self) -> dict[str, str]:
        """face_id -> false positive | fine, as applied to each kept face (its duplicate group's decision)."""
        from tasks.artifacts.decisions import applied_decisions, load_decisions

        if not self.faces or not Path(self.p.review.decisions).is_file():
            return {}
        import pyarrow as pa

        table = pa.Table.from_pylist([{"face_id": f, "duplicate_of": r["duplicate_of"], "drop_reason": r["drop_reason"]}
                                      for f, r in self.faces.items()])
        try:
            _, decisions = load_decisions(self.p.review.decisions)
        except MoeflowError as e:
            log.warning("provenance: %s", e)
            return {}
        return {f: "false positive" if d.false_positive else "fine" for f, d in applied_decisions(table, decisions).items()}

    def _runs(self, runs: Path) -> dict[str, str]:
        out = {}
        if runs.is_dir():
            for rj in sorted(runs.glob("*/run.json")):
                try:
                    out[rj.parent.name] = json.loads(rj.read_text()).get("identity", {}).get("data")
                except (OSError, ValueError):
                    continue
        return out

    def version(self, path: str | Path) -> dict:
        """An artifact named with its dvc.lock md5, and whether the workspace still matches it."""
        rel = str(Path(path))
        entry = {"path": rel}
        stage, md5 = self.lock.get(rel, (None, None))
        p = self.root / rel
        if md5 is None:
            entry["dvc_lock"] = None
        else:
            entry.update(stage=stage, md5=md5)
            if p.is_file() and not md5.endswith(".dir") and file_hexdigest(p, "md5") != md5:
                entry["changed_since_lock"] = True
        return entry

    # -- queries ----------------------------------------------------------------------------------
    def resolve(self, ident: str) -> tuple[set[str], set[str]]:
        """(image_ids, face_ids) an id or a unique prefix names."""
        ident = ident.strip().lower()
        if not HEX.fullmatch(ident):
            raise ConfigError(f"{ident!r} is not a face_id or image_id (hex digits, at least 6)")
        faces = {f for f in self.faces if f.startswith(ident)} | {f for f in self.release if f.startswith(ident)}
        images = {i for i in (*self.manifest, *self.removed) if i and i.startswith(ident)}
        if len(faces) + len(images) > 1:
            raise ConfigError(f"{ident!r} names {len(faces)} faces and {len(images)} images: give more digits")
        if not faces and not images:
            raise ConfigError(f"{ident!r} is no face_id or image_id of this project (nor of its opt-out log)")
        if faces:
            (fid,) = faces
            image = self.faces.get(fid, {}).get("image_id")
            return ({image} if image else set()), faces
        return images, set()

    def select(self, artist: str | None = None, tag: str | None = None, url: str | None = None,
               post: tuple[str, str] | None = None) -> set[str]:
        """The images (kept, or removed by an opt-out) whose post matches."""
        want_url = url_key(url) if url else None
        if url and want_url is None:
            raise ConfigError(f"--url {url!r}: expected an http(s) URL")
        subjects = {i: Subject.of(r) for i, r in self.manifest.items()}
        for image, entries in self.removed.items():
            subjects.setdefault(image, Subject.of(entries[-1]["post"], image))
        out = set()
        for image, s in subjects.items():
            if artist and name_key(artist) not in s.artist_keys():
                continue
            if tag and name_key(tag) not in {name_key(t) for t in s.tags}:
                continue
            if want_url and want_url not in {url_key(u) for u in (s.url, s.page_url) if u}:
                continue
            if post and (s.source, s.post_id) != post:
                continue
            out.add(image)
        return out

    def face_report(self, fid: str) -> dict:
        f = self.faces.get(fid, {})
        return {"face_id": fid, "detector": f.get("detector"),
                "crop_box": [f.get(k) for k in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")] if f else None,
                "kept": bool(f) and f.get("drop_reason") is None, "drop_reason": f.get("drop_reason"),
                "duplicate_of": f.get("duplicate_of"), "crop_shard": f.get("shard"),
                "review": self.verdicts.get(fid) or ("queued" if fid in self.queue else
                                                     "unreviewed" if f and f.get("drop_reason") is None else None),
                "tagged": fid in self.tags, "attributes": self.tags.get(fid),
                "training": self.train.get(fid), "released": fid in self.release}

    def stored(self, m: dict) -> dict | None:
        """Where the store holds an image's bytes (its pack, offset, length), if they are there."""
        images = self.p.scrape.out.images
        try:
            data = read_image(images, m)
        except OSError:
            return None
        if sha256_bytes(data) != m["image_id"]:
            return None
        # a pack of the store, or the user's file a reference import left in place (`../`: shown resolved)
        return {"pack": os.path.normpath(os.path.join(images, m["pack"])), "offset": m["offset"], "length": m["length"]}

    def image_report(self, image: str, only: set[str] | None = None) -> dict:
        m = self.manifest.get(image)
        rep: dict = {"image_id": image}
        if m is not None:
            rep["origin"] = {k: m.get(k) for k in ("source", "post_id", "url", "page_url", "artist", "rating",
                                                   "title", "character", "width", "height", "format")}
            rep["origin"]["fetched_at"] = str(m.get("fetched_at"))
            rep["stored"] = self.stored(m)
            hit = self.requests.match(Subject.of(m)) if self.requests else None
            rep["optout"] = hit.as_dict() if hit else None
        if self.removed.get(image):
            rep["removed_on_request"] = [{k: e.get(k) for k in ("at", "request", "post", "faces", "previous",
                                                                "contained_in")} for e in self.removed[image]]
        fids = [f for f in self.faces_of.get(image, []) if only is None or f in only]
        if only:
            fids += sorted(f for f in only if f not in fids)
        rep["faces"] = [self.face_report(f) for f in fids]
        return rep

    def holders(self, face_ids: set[str], images: set[str]) -> dict:
        """The artifact versions and models that hold these faces / images now."""
        p = self.p
        held = []

        def add(path, n, what):
            if n:
                held.append({**self.version(path), what: n})

        add(p.scrape.out.manifest, len(images & set(self.manifest)), "images")
        add(p.detect.out.faces, len(face_ids & set(self.faces)), "faces")
        shards = sorted({self.faces[f]["shard"] for f in face_ids if f in self.faces and self.faces[f]["shard"]})
        if shards:
            held.append({**self.version(p.detect.out.crops), "shards": shards})
        add(p.review.out.queue, len(face_ids & self.queue), "faces")
        add(p.tag.out.tags, len(face_ids & set(self.tags)), "faces")
        in_train = {f for f in face_ids if f in self.train}
        add(p.train.out.data, len(in_train), "faces")
        add(p.release.out.faces, len(face_ids & self.release), "faces")
        trained = {f for f in in_train if self.train[f] == "train"}
        models = []
        if self.generator is not None and trained:
            fp = self.generator.get("data_fingerprint")
            on = bool(trained) and fp is not None and fp == self.fingerprint
            models.append({**self.version(self.generator_path), "model": "generator", "run": self.generator.get("run"),
                           "data_fingerprint": fp, "trained_on": len(trained) if on else 0,
                           "note": None if on or not trained else
                           "its data fingerprint is not the training dataset's: it learned from another version"})
            if on:
                gen = self.version(self.generator_path)
                for stage, deps in sorted(self.lock_deps.items()):
                    if (str(self.generator_path), gen.get("md5")) in deps:
                        for path, (st, _) in sorted(self.lock.items()):
                            if st == stage and not path.endswith(".json"):
                                models.append({**self.version(path), "model": f"made from the generator ({stage})"})
        if trained:
            for run, data in sorted(self.runs.items()):
                if data == self.fingerprint:
                    models.append({"path": str(Path(p.train.out.dir) / "runs" / run), "model": "training run",
                                   "run": run, "trained_on": len(trained)})
        return {"artifacts": held, "models": models, "faces_in_training_split": len(trained)}


def query(ws: Workspace, args) -> dict:
    if args.id:
        images, faces = ws.resolve(args.id)
        reports = [ws.image_report(i, faces or None) for i in sorted(images)] or [
            {"image_id": None, "faces": [ws.face_report(f) for f in sorted(faces)]}]
        all_faces = faces or {f for i in images for f in ws.faces_of.get(i, [])}
        return {"query": {"id": args.id}, "images": reports, **ws.holders(all_faces, images)}
    post = tuple(args.post) if args.post else None
    images = ws.select(args.artist, args.tag, args.url, post)
    faces = {f for i in images for f in ws.faces_of.get(i, [])}
    q = {k: v for k, v in (("artist", args.artist), ("tag", args.tag), ("url", args.url), ("post", post)) if v}
    return {"query": q, "images": [ws.image_report(i) for i in sorted(images)], **ws.holders(faces, images)}


def _where(a: dict) -> str:
    if a.get("dvc_lock", "") is None:
        return f"{a['path']} (not in dvc.lock)"
    tail = ", changed since dvc.lock" if a.get("changed_since_lock") else ""
    return f"{a['path']} ({a.get('stage')} md5 {str(a.get('md5'))[:12]}{tail})"


def render(result: dict) -> str:
    lines = [f"query: {', '.join(f'{k} {v}' for k, v in result['query'].items())}: "
             f"{len(result['images'])} images, {sum(len(i['faces']) for i in result['images'])} faces"]
    for img in result["images"]:
        o = img.get("origin")
        if o:
            lines.append(f"image {img['image_id']}: {o['source']} post {o['post_id']}, artist {o['artist'] or '-'}, "
                         f"rating {o['rating'] or '-'}")
            lines.append(f"  url {o['url'] or '-'}; page {o['page_url'] or '-'}; fetched {o['fetched_at']}")
            st = img.get("stored")
            lines.append(f"  bytes in the image store: {st['pack']} ({st['length']} bytes at {st['offset']})" if st
                         else "  bytes in the image store: no"
                         + (f"; optout.csv names it: {img['optout']['file']} line {img['optout']['line']}" if img.get("optout") else ""))
        elif img.get("image_id"):
            lines.append(f"image {img['image_id']}: not in the manifest")
        for e in img.get("removed_on_request", []):
            r = e["request"]
            lines.append(f"  removed on request {e['at']}: {r['file']} line {r['line']} ({r['kind']} {r['value']}, "
                         f"{r['date']}: {r['reason']}); then held by:")
            lines += [f"    {_where(c)}" + (" (trained on it)" if c.get("trained_on") else "")
                      + (f" derived from {', '.join(c['derived_from'])}" if c.get("derived_from") else "")
                      for c in e.get("contained_in", [])]
        for f in img["faces"]:
            lines.append(f"  face {f['face_id']}: {f['detector']} crop {f['crop_box']}, "
                         + ("kept" if f["kept"] else f"dropped ({f['drop_reason']})")
                         + f"; review {f['review'] or '-'}; tags {'yes' if f['tagged'] else 'no'}; "
                         f"training {f['training'] or 'no'}; release {'yes' if f['released'] else 'no'}")
    lines.append("held by:" if result["artifacts"] else "held by no artifact in the workspace")
    for a in result["artifacts"]:
        what = ", ".join(f"{k} {v if not isinstance(v, list) else len(v)}" for k, v in a.items()
                         if k in ("images", "faces", "shards"))
        lines.append(f"  {_where(a)}: {what}")
    lines.append("models:" if result["models"] else "models: none holds them")
    for m in result["models"]:
        detail = (f": run {m.get('run')}, trained on {m['trained_on']} of their faces" if "trained_on" in m else "")
        lines.append(f"  {m['model']} {_where(m) if 'md5' in m or 'dvc_lock' in m else m['path']}{detail}"
                     + (f" ({m['note']})" if m.get("note") else ""))
    return "\n".join(lines) + "\n"


@one_line_errors()
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.tools.provenance", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("id", nargs="?", help="a face_id or image_id (or a unique prefix, 6+ hex digits)")
    ap.add_argument("--artist")
    ap.add_argument("--tag")
    ap.add_argument("--url")
    ap.add_argument("--post", nargs=2, metavar=("SOURCE", "POST_ID"))
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    if sum(bool(x) for x in (args.id, args.artist, args.tag, args.url, args.post)) != 1:
        ap.error("give one of: an id, --artist, --tag, --url, --post")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = query(Workspace(load_params(args.params)), args)
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n" if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
