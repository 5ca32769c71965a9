"""Takedowns and releases through `dvc repro`, on throwaway copies of the project scraping a local
fake Danbooru (tests/support/fakebooru.py) that serves real illustrations by two artists:
- the provenance query on a known face: where it comes from, what holds it, the generator too;
- the release round trip: publish, rebuild in a fresh copy from the manifest alone, the same
  face_ids and attributes; one URL serving other bytes is rejected as a hash mismatch, and what the
  rebuilder's optout.csv names is never fetched;
- a malformed optout.csv is refused line by line and nothing changes;
- an opt-out row for an artist removes every face of theirs from every artifact after `dvc repro`,
  the training data changes and the generator retrains, the audit log names the versions that held
  them, the card counts them, and `dvc gc --workspace` purges their bytes from DVC's cache."""

from __future__ import annotations

import json
import shutil
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.artifacts.faces import read_shard
from tasks.fileio import safetensors_metadata
from tests.support.fakebooru import FakeBooru
from tests.support.project import TINY_DAG, make_copy, run
from tests.support.scrape import FAST_HTTP, stored

# small illustrations lbpcascade finds faces in (TINY's detect params): 13 faces by artist_a, 5 by artist_b
ARTIST_A = ["afdr_detect_01.jpg", "afdr_detect_04.jpg", "afdr_detect_07.jpg", "s2p_23.png",
            "renpy_sylvie_green_giggle.png", "s2p_test_15.jpg", "s2p_24.png"]
ARTIST_B = ["afdr_detect_06.jpg", "s2p_27.png", "s2p_test_23.jpg", "dbr_app1.jpg", "s2p_29.png"]
TARGETS = ["review", "release", "train"]


def booru_params(url: str) -> dict:
    return {**TINY_DAG, "scrape": {"source": "danbooru", "base_url": url, "tags": "1girl", "posts_per_page": 5,
                                   "http": dict(FAST_HTTP), "filters": {"min_width": 0, "min_height": 0}}}


@pytest.fixture(scope="module")
def booru():
    with FakeBooru() as srv:
        for i, name in enumerate(ARTIST_A + ARTIST_B):
            srv.add_real_posts([name], start_id=900 - i, tag_string_artist="artist_a" if name in ARTIST_A else "artist_b",
                               tag_string=f"1girl solo pic_{i}")
        yield srv


@pytest.fixture(scope="module")
def published(booru, tmp_path_factory):
    """Project A after `dvc repro release train`, and a copy of its release as published then."""
    a = make_copy(tmp_path_factory.mktemp("publisher"), booru_params(booru.url))
    run(["dvc", "repro", *TARGETS], a, timeout=900)
    shelf = tmp_path_factory.mktemp("published")
    for name in ("faces.parquet", "faces.jsonl", "release.json", "README.md"):
        shutil.copy2(a / "data/release" / name, shelf / name)
    return a, shelf


def lock(project) -> dict:
    return yaml.safe_load((project / "dvc.lock").read_text())


def table(project, rel: str):
    return pq.read_table(project / rel)


def provenance(project, *args) -> dict:
    r = run([sys.executable, "-m", "tasks.tools.provenance", "--json", *args], project)
    return json.loads(r.stdout)


def test_provenance_of_a_known_face(published):
    a, _ = published
    train = table(a, "data/train/faces.parquet").to_pylist()
    fid = next(r["face_id"] for r in train if r["split"] == "train")
    faces = {r["face_id"]: r for r in table(a, "data/faces/faces.parquet").to_pylist()}
    image = faces[fid]["image_id"]
    m = next(r for r in table(a, "data/raw/manifest.parquet").to_pylist() if r["image_id"] == image)
    out = provenance(a, fid[:10])  # a prefix is enough
    (img,) = out["images"]
    assert img["image_id"] == image and img["origin"]["post_id"] == m["post_id"]
    assert img["origin"]["url"] == m["url"] and img["origin"]["artist"] == m["artist"]
    assert img["stored"]["pack"].endswith(m["pack"]) and img["optout"] is None
    (face,) = img["faces"]
    assert face["face_id"] == fid and face["training"] == "train" and face["released"] and face["tagged"]
    assert face["crop_box"] == [faces[fid][k] for k in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")]
    paths = {h["path"]: h for h in out["artifacts"]}
    md5 = {o["path"]: o["md5"] for st in lock(a)["stages"].values() for o in st["outs"]}
    for p in ("data/raw/manifest.parquet", "data/faces/faces.parquet", "data/faces/crops", "data/tags/tags.parquet",
              "data/train/faces.parquet", "data/release/faces.parquet"):
        assert paths[p]["md5"] == md5[p], p  # named by the version dvc.lock records
    gen = next(x for x in out["models"] if x["model"] == "generator")
    meta_fp = pq.read_schema(a / "data/train/faces.parquet").metadata[b"moeflow.fingerprint"].decode()
    assert gen["trained_on"] == 1 and gen["data_fingerprint"] == meta_fp
    assert any(x["model"] == "training run" for x in out["models"])

    # the other direction: which images and models hold artist_b
    out = provenance(a, "--artist", "Artist_B")
    assert {i["origin"]["artist"] for i in out["images"]} == {"artist_b"} and len(out["images"]) == len(ARTIST_B)
    n_train = sum(1 for i in out["images"] for f in i["faces"] if f["training"] == "train")
    assert n_train > 0 and out["faces_in_training_split"] == n_train
    assert next(x for x in out["models"] if x["model"] == "generator")["trained_on"] == n_train
    text = run([sys.executable, "-m", "tasks.tools.provenance", "--artist", "artist_b"], a).stdout
    assert "generator" in text and f"trained on {n_train} of their faces" in text


def test_the_release_round_trip(published, booru, tmp_path_factory):
    a, shelf = published
    header = json.loads((shelf / "release.json").read_text())
    released = pq.read_table(shelf / "faces.parquet").to_pylist()
    assert header["format"] == "moeflow-release" and header["schema_version"] == 1 and header["license"]
    assert len(released) == header["faces"] > 0
    assert [json.loads(x) for x in (shelf / "faces.jsonl").read_text().splitlines()] == released
    assert "**License:** CC0-1.0" in (shelf / "README.md").read_text()
    images = {r["sha256"]: r for r in released}
    # one image now served with other bytes (the same pixels), one post the rebuilder's optout.csv names
    changed = next(r for r in released if r["post_id"] == str(900 - (ARTIST_A + ARTIST_B).index("s2p_23.png")))
    named = next(r for r in released if r["post_id"] == str(900 - (ARTIST_A + ARTIST_B).index("afdr_detect_07.jpg")))
    name = changed["url"].rsplit("/", 1)[1]
    real = booru.files.pop(name)
    booru.files["original-" + name] = real
    booru.add_variant(name, "original-" + name, "re-encoded by the CDN")
    try:
        b = make_copy(tmp_path_factory.mktemp("rebuilder"),
                      {**TINY_DAG, "scrape": {"source": "release", "release": "rebuild/faces.parquet",
                                              "http": dict(FAST_HTTP)}})
        shutil.copy2(shelf / "faces.parquet", b / "rebuild" / "faces.parquet")  # the manifest alone
        (b / "optout.csv").write_text((b / "optout.csv").read_text()
                                      + f"2026-11-30,the artist's e-mail,,,,danbooru,{named['post_id']},,\n")
        mark = len(booru.log)
        run(["dvc", "repro", "release"], b, timeout=900)
    finally:
        booru.files[name] = real
        booru.files.pop("original-" + name)
        booru.variants.pop(name, None)
    asked = [p for _, p, _ in booru.log[mark:]]
    assert "/posts.json" not in asked  # from the manifest alone: no listing
    assert named["url"].rsplit("/", 1)[1] not in {p.rsplit("/", 1)[1] for p in asked}  # opted out: never fetched
    summary = json.loads((b / "data/raw/summary.json").read_text())
    assert summary["rejected"] == {"sha256_mismatch": 1} and summary["skipped"] == {"optout": 1}
    kept = {r["image_id"] for r in table(b, "data/raw/manifest.parquet").to_pylist()}
    assert kept == set(images) - {changed["sha256"], named["sha256"]}  # the other bytes were never kept
    rebuilt = table(b, "data/release/faces.parquet").to_pylist()
    expect = [r for r in released if r["sha256"] in kept]
    assert [r["face_id"] for r in rebuilt] == [r["face_id"] for r in expect]
    assert [r["attributes"] for r in rebuilt] == [r["attributes"] for r in expect]
    for k in ("source", "post_id", "url", "page_url", "artist", "rating", "tags", "crop_x0", "crop_y1", "detector"):
        assert [r[k] for r in rebuilt] == [r[k] for r in expect], k
    assert "Traceback" not in (b / "reports/runs/scrape.md").read_text()


def test_a_malformed_optout_csv_is_refused_and_nothing_changes(published):
    a, _ = published
    before = (a / "dvc.lock").read_bytes()
    store = sorted(p.name for p in (a / "data/raw/images").rglob("*") if p.is_file())
    manifest = (a / "data/raw/manifest.parquet").read_bytes()
    good = (a / "optout.csv").read_text()
    (a / "optout.csv").write_text(good + "2026-11-30,e-mail,artist_b,,,,,,\n2026-13-01,,artist_a,,,,,,\n")
    try:
        r = run(["dvc", "repro", *TARGETS], a, timeout=600, check=False)
    finally:
        (a / "optout.csv").write_text(good)
    errors = [x for x in (r.stdout + r.stderr).splitlines() if x.startswith("error: ")]
    assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr
    assert any("optout.csv: line 3: date '2026-13-01'" in x for x in errors), errors
    assert any("optout.csv: line 3: reason is blank" in x for x in errors), errors
    assert (a / "dvc.lock").read_bytes() == before
    assert (a / "data/raw/manifest.parquet").read_bytes() == manifest  # DVC put it back, the stage wrote nothing
    assert sorted(p.name for p in (a / "data/raw/images").rglob("*") if p.is_file()) == store
    assert (a / "data/raw/optout_log.jsonl").read_text() == ""


def test_an_artist_opt_out_leaves_every_artifact(published, booru):
    a, _ = published
    old_lock = lock(a)
    manifest = table(a, "data/raw/manifest.parquet").to_pylist()
    theirs = {r["image_id"]: r for r in manifest if r["artist"] == "artist_b"}
    faces = table(a, "data/faces/faces.parquet").to_pylist()
    their_faces = {r["face_id"] for r in faces if r["image_id"] in theirs}
    train_before = table(a, "data/train/faces.parquet")
    before = {rel: set(table(a, rel).column("face_id").to_pylist()) for rel in
              ("data/tags/tags.parquet", "data/train/faces.parquet", "data/release/faces.parquet")}
    assert their_faces & set(train_before.column("face_id").to_pylist())  # they were trained on
    gen_before = safetensors_metadata(a / "data/train/generator.safetensors")
    (a / "optout.csv").write_text((a / "optout.csv").read_text()
                                  + "2026-11-30,the artist's e-mail of 2026-11-29,artist_b,,,,,,\n")
    mark = len(booru.log)
    out = run(["dvc", "repro", *TARGETS], a, timeout=900).stdout
    assert "Running stage 'train'" in out and "Running stage 'release'" in out
    their_files = {f"/data/{n}" for n in ARTIST_B}
    assert not [p for _, p, _ in booru.log[mark:] if p in their_files]  # never downloaded again

    # gone from every artifact
    assert not set(theirs) & {r["image_id"] for r in table(a, "data/raw/manifest.parquet").to_pylist()}
    assert not set(theirs) & set(stored(a / "data/raw/images"))  # their bytes left the packs
    assert not their_faces & set(table(a, "data/faces/faces.parquet").column("face_id").to_pylist())
    assert not set(theirs) & set(table(a, "data/faces/images.parquet").column("image_id").to_pylist())
    for shard in (a / "data/faces/crops").glob("shard-*.parquet"):
        assert not their_faces & set(read_shard(shard)), shard
    queue = (a / "review/queue.csv").read_text()
    assert not [f for f in their_faces if f in queue]
    thumbs = "".join(p.read_text() for p in (a / "review/thumbs").rglob("*.js"))
    assert not [f for f in their_faces if f in thumbs]
    assert not their_faces & set(table(a, "data/tags/tags.parquet").column("face_id").to_pylist())
    train = table(a, "data/train/faces.parquet")
    assert not their_faces & set(train.column("face_id").to_pylist()) and train.num_rows < train_before.num_rows
    fp = train.schema.metadata[b"moeflow.fingerprint"]
    assert fp != train_before.schema.metadata[b"moeflow.fingerprint"]
    metrics = json.loads((a / "data/train/summary.json").read_text())
    assert metrics["data_fingerprint"] == fp.decode() != gen_before["data_fingerprint"] and metrics["step"] == 4
    release = table(a, "data/release/faces.parquet").to_pylist()
    assert release and not their_faces & {r["face_id"] for r in release}
    assert not set(theirs) & {r["sha256"] for r in release}
    assert "artist_b" not in (a / "data/release/faces.jsonl").read_text()

    # the audit log: what matched which row, when, and the versions that still held it
    log = [json.loads(x) for x in (a / "data/raw/optout_log.jsonl").read_text().splitlines()]
    assert sorted(e["image_id"] for e in log) == sorted(theirs)
    md5 = {(name, o["path"]): o["md5"] for name, st in old_lock["stages"].items() for o in st["outs"]}
    for e in log:
        assert e["request"] == {"file": "optout.csv", "line": 2, "date": "2026-11-30", "kind": "artist",
                                "value": "artist_b", "reason": "the artist's e-mail of 2026-11-29"}
        assert e["at"] and e["previous"]["dvc_lock_sha256"] and e["previous"]["git_commit"]
        held = {c["path"]: c for c in e["contained_in"]}
        for c in e["contained_in"]:
            assert md5[(c["stage"], c["path"])] == c["md5"]  # versions of the previous dvc.lock
        assert held["data/raw/manifest.parquet"]["rows"] == 1
        assert held["data/raw/images"]["file"] == theirs[e["image_id"]]["pack"]
        assert set(e["faces"]) <= their_faces
        if e["faces"]:
            assert held["data/faces/faces.parquet"]["faces"] == len(e["faces"]) and "data/faces/crops" in held
        for rel, key in (("data/tags/tags.parquet", "faces"), ("data/train/faces.parquet", "faces"),
                         ("data/release/faces.parquet", "rows")):
            n = len(before[rel] & set(e["faces"]))
            assert (held[rel][key] if rel in held else 0) == n, (rel, e)
    trained = [e for e in log if "data/train/generator.safetensors" in {c["path"] for c in e["contained_in"]}]
    assert trained and all(next(c for c in e["contained_in"] if c["path"] == "data/train/generator.safetensors")
                           .get("trained_on") for e in trained)

    # the card counts them
    for stale in ("summary.json", "metrics.json"):  # render did not run here: the card says so (its stale file breaks it)
        (a / "data/render" / stale).unlink(missing_ok=True)
    run([sys.executable, "-m", "tasks.tools.card", "--out", "reports/card.md"], a)
    card = (a / "reports/card.md").read_text()
    section = card.split("## Removed on request", 1)[1].split("\n## ", 1)[0]
    assert f"| images (their bytes left the image store) | {len(theirs)} |" in section
    assert f"| faces (gone from faces, crops, review queue, tags, training data, release) | {len(their_faces)} |" in section
    assert "Requests in `optout.csv`: **1** (artist 1)" in section
    assert "## Removed on request" in (a / "data/release/README.md").read_text()

    # what stays in DVC's cache until `dvc gc`: the raw bytes' objects, named in the log
    objects = {c["object"] for e in log for c in e["contained_in"] if c["path"] == "data/raw/images"}
    cache = a / ".dvc/cache/files/md5"
    assert all((cache / o[:2] / o[2:]).is_file() for o in objects)
    run(["dvc", "gc", "--workspace", "--force"], a)
    assert not any((cache / o[:2] / o[2:]).exists() for o in objects)
    status = run(["dvc", "status", *TARGETS], a).stdout
    assert "changed" not in status, status
