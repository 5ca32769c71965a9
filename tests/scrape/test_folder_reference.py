"""scrape.folder_import: reference (issue 22): a folder import that does not copy the user's files.
The store names each kept file where it is, its image_id (sha256) pins the bytes, every read checks
them, the user's files are never written or deleted (an opt-out included), a changed or vanished
file is noticed (by detect before a rescrape, and by the next scrape), and switching to `copy`
packs the referenced images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tasks.artifacts.faces import read_faces, read_images
from tasks.artifacts.images import Changed, is_reference, read_image
from tasks.detect.run import detect
from tasks.fileio import sha256_bytes, sha256_file
from tasks.scrape.run import scrape
from tests.scrape.test_store_packs import check_store, folder, store_files
from tests.support.detect import config as detect_config
from tests.support.fakebooru import REAL
from tests.support.scrape import OPTOUT_HEADER, manifest, scrape_cfg

NAMES = ["afdr_detect_07.jpg", "s2p_13.png", "afdr_detect_01.jpg",
         *[n for n in sorted(p.name for p in REAL.iterdir()) if n.startswith("s2p") and n != "s2p_13.png"][:4]]


def ref_cfg(tmp: Path, src: Path, mode: str = "reference", **over):
    return scrape_cfg(tmp, "http://unused.invalid", source="folder", folder=str(src), pack_images=2,
                      folder_import=mode, **over)


def snapshot(src: Path) -> dict[str, tuple]:
    """Every file of the user's folder: bytes, mode, mtime (what the import must never change)."""
    return {p.name: (sha256_file(p), p.stat().st_mode, p.stat().st_mtime_ns) for p in sorted(src.iterdir())}


def test_a_reference_import_keeps_no_copy_and_reads_the_users_files(tmp_path):
    src = folder(tmp_path, NAMES)
    before = snapshot(src)
    cfg = ref_cfg(tmp_path, src)
    s = scrape(cfg, progress=False)
    assert s.kept_new == len(NAMES)
    rows = manifest(cfg)
    assert {r["image_id"] for r in rows} == {sha256_file(src / n) for n in NAMES}
    for r in rows:  # each row names the user's file itself, and reads its bytes
        assert is_reference(r["pack"]) and r["offset"] == 0 and r["length"] == r["bytes"]
        assert Path(cfg.out.images, r["pack"]).resolve() == (src / r["post_id"]).resolve()
        assert sha256_bytes(read_image(cfg.out.images, r)) == r["image_id"]
    assert store_files(cfg) == ["index.jsonl"]  # no pack, no loose copy: only the index is the store's
    assert sum(p.stat().st_size for p in Path(cfg.out.images).rglob("*") if p.is_file()) < 20_000
    assert snapshot(src) == before
    assert scrape(cfg, progress=False).kept_new == 0  # a second run: nothing new, nothing read again


def test_a_relative_folder_is_referenced_relative_to_the_store(tmp_path, monkeypatch):
    """The demo's layout (scrape.folder: ../shared/data): the manifest names the files by a path
    relative to the store, the same on every machine that has the folder in the same place."""
    folder(tmp_path / "shared", NAMES[:2])
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    cfg = ref_cfg(Path("data"), Path("../shared/src"))  # the store: data/images
    scrape(cfg, progress=False)
    packs = sorted(r["pack"] for r in manifest(cfg))
    assert packs == sorted(f"../../../shared/src/{n}" for n in NAMES[:2])


def test_detect_crops_the_referenced_files_as_it_crops_packed_ones(tmp_path):
    src = folder(tmp_path, NAMES)
    refs = ref_cfg(tmp_path / "refs", src)
    copied = ref_cfg(tmp_path / "copied", src, "copy")
    for cfg in (refs, copied):
        scrape(cfg, progress=False)
    a, b = detect_config(tmp_path / "detect_refs"), detect_config(tmp_path / "detect_copied")
    detect(a, refs.out.manifest, refs.out.images, progress=False)
    detect(b, copied.out.manifest, copied.out.images, progress=False)
    faces_a, faces_b = read_faces(a.out.faces).to_pylist(), read_faces(b.out.faces).to_pylist()
    assert faces_a and [r["face_id"] for r in faces_a] == [r["face_id"] for r in faces_b]
    assert sorted(os.listdir(a.out.crops)) == sorted(os.listdir(b.out.crops))
    for name in os.listdir(a.out.crops):
        assert sha256_file(Path(a.out.crops, name)) == sha256_file(Path(b.out.crops, name))


def test_a_file_changed_after_the_import_is_not_trusted(tmp_path):
    """Bytes that are no longer the image_id's: read_image refuses them, detect crops nothing of
    them (a transient `missing`, done again once the store names the right bytes), and the next
    scrape drops the old image and keeps the new bytes; a vanished file leaves the store."""
    src = folder(tmp_path, NAMES[:3])
    cfg = ref_cfg(tmp_path, src)
    scrape(cfg, progress=False)
    old = sha256_file(src / NAMES[0])
    shutil.copy(REAL / NAMES[3], src / NAMES[0])  # other bytes under the same name
    row = next(r for r in manifest(cfg) if r["image_id"] == old)
    with pytest.raises(Changed, match="changed since the image store referenced it"):
        read_image(cfg.out.images, row)
    d = detect_config(tmp_path / "detect")
    detect(d, cfg.out.manifest, cfg.out.images, progress=False)
    images = {r["image_id"]: r for r in read_images(d.out.images).to_pylist()}
    assert images[old]["status"] == "bad" and images[old]["reason"] == "missing"
    assert "changed since" in images[old]["detail"]
    assert not [f for f in read_faces(d.out.faces).to_pylist() if f["image_id"] == old]

    scrape(cfg, progress=False)
    assert {r["image_id"] for r in manifest(cfg)} == {sha256_file(src / n) for n in NAMES[:3]}
    (src / NAMES[1]).unlink()
    scrape(cfg, progress=False)
    assert {r["image_id"] for r in manifest(cfg)} == {sha256_file(src / n) for n in (NAMES[0], NAMES[2])}


def test_an_optout_takes_a_referenced_image_out_and_leaves_the_users_file(tmp_path):
    src = folder(tmp_path, NAMES[:3])
    cfg = ref_cfg(tmp_path, src)
    scrape(cfg, progress=False)
    before = snapshot(src)
    gone = sha256_file(src / NAMES[1])
    Path(cfg.optout).write_text(OPTOUT_HEADER + f"2026-12-03,request,,,,,,{gone},\n")
    s = scrape(cfg, progress=False)
    assert s.removed == 1 and gone not in {r["image_id"] for r in manifest(cfg)}
    assert snapshot(src) == before


def test_switching_modes(tmp_path):
    """reference -> copy: the next run copies the referenced images into packs (the folder may
    then go); copy -> reference: packed images stay packed, new files are referenced."""
    src = folder(tmp_path, NAMES[:5])
    scrape(ref_cfg(tmp_path, src), progress=False)
    cfg = ref_cfg(tmp_path, src, "copy")
    scrape(cfg, progress=False)
    ids = {sha256_file(src / n) for n in NAMES[:5]}
    check_store(cfg, ids)
    shutil.rmtree(src)
    assert {sha256_bytes(read_image(cfg.out.images, r)) for r in manifest(cfg)} == ids

    src = folder(tmp_path, NAMES[:6])
    scrape(ref_cfg(tmp_path, src), progress=False)
    rows = manifest(cfg)
    assert {r["image_id"] for r in rows} == ids | {sha256_file(src / NAMES[5])}
    assert [r["post_id"] for r in rows if is_reference(r["pack"])] == [NAMES[5]]
