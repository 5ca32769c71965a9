"""The image store keeps its images in tar packs (issue 22): DVC tracks a file per
`scrape.pack_images` images, not one per image. Packs are plain ustar tars with fixed headers (the
same images, the same bytes), a run adds packs (merging small non-full ones), a kill at any point is repaired by the
next run (no image twice, none lost), and an opt-out takes the bytes out of the pack."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tasks.artifacts.faces import read_faces
from tasks.artifacts.images import read_image
from tasks.detect.run import detect
from tasks.fileio import sha256_bytes
from tasks.scrape import packs
from tasks.scrape.run import scrape
from tasks.scrape.store import Store
from tests.support.detect import config as detect_config
from tests.support.detect import write_manifest as write_loose_manifest
from tests.support.fakebooru import REAL
from tests.support.scrape import OPTOUT_HEADER, manifest, scrape_cfg

NAMES = sorted(p.name for p in REAL.iterdir())[:10]


def folder(tmp: Path, names: list[str]) -> Path:
    src = tmp / "src"
    src.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(REAL / n, src / n)
    return src


def cfg_for(tmp: Path, src: Path, pack_images: int = 4):
    return scrape_cfg(tmp, "http://unused.invalid", source="folder", folder=str(src), pack_images=pack_images)


def pack_files(cfg) -> list[Path]:
    return sorted((Path(cfg.out.images) / "packs").iterdir())


def store_files(cfg) -> list[str]:
    """Every file of the store DVC tracks (the journal and temp files are .dvcignore'd)."""
    root = Path(cfg.out.images)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "journal.jsonl")


def check_store(cfg, expected: set[str]) -> None:
    """Every kept image once, in a pack, its bytes where the manifest says; nothing loose."""
    rows = manifest(cfg)
    assert {r["image_id"] for r in rows} == expected and len(rows) == len(expected)
    for r in rows:
        assert packs.is_pack(r["pack"]) and sha256_bytes(read_image(cfg.out.images, r)) == r["image_id"]
    members = []
    for p in pack_files(cfg):
        with tarfile.open(p) as tar:
            members += [m.name.split(".")[0] for m in tar.getmembers()]
    assert sorted(members) == sorted(expected)  # no image twice, none lost
    assert store_files(cfg) == ["index.jsonl", *(f"packs/{p.name}" for p in pack_files(cfg))]


def test_packs_are_plain_deterministic_tars_of_pack_images_each(tmp_path):
    runs = []
    for name in ("a", "b"):  # two clean runs of the same folder
        cfg = cfg_for(tmp_path / name, folder(tmp_path / name, NAMES))
        scrape(cfg, progress=False)
        runs.append(cfg)
    a, b = runs
    rows = manifest(a)
    assert len(rows) == 10
    assert [p.name for p in pack_files(a)] == ["000001.tar", "000002.tar", "000003.tar"]  # ceil(10 / 4)
    assert [p.read_bytes() for p in pack_files(a)] == [p.read_bytes() for p in pack_files(b)]
    assert (Path(a.out.images) / "index.jsonl").read_bytes() == (Path(b.out.images) / "index.jsonl").read_bytes()
    check_store(a, {r["image_id"] for r in rows})
    # by image_id, pack_images a pack; members <image_id>.<ext> with nothing of the machine in the header
    ids = sorted(r["image_id"] for r in rows)
    listed = subprocess.run(["tar", "tf", str(pack_files(a)[0])], capture_output=True, text=True, check=True).stdout
    ext = {r["image_id"]: {"PNG": "png", "JPEG": "jpg"}[r["format"]] for r in rows}
    assert listed.split() == [f"{i}.{ext[i]}" for i in ids[:4]]
    with tarfile.open(pack_files(a)[2]) as tar:
        for m in tar.getmembers():
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "xf", str(pack_files(a)[1]), "-C", str(out)], check=True)
    assert sorted(sha256_bytes(p.read_bytes()) for p in out.iterdir()) == ids[4:8]


def members(pack: Path) -> int:
    with tarfile.open(pack) as tar:
        return len(tar.getmembers())


def test_a_second_run_merges_a_small_last_pack_and_adds_packs(tmp_path):
    src = folder(tmp_path, NAMES[:5])
    cfg = cfg_for(tmp_path, src)
    scrape(cfg, progress=False)
    first = {r["image_id"]: r for r in manifest(cfg)}
    full = pack_files(cfg)[0].read_bytes()
    assert [p.name for p in pack_files(cfg)] == ["000001.tar", "000002.tar"]
    folder(tmp_path, NAMES[5:])
    again = scrape(cfg, progress=False)
    assert again.kept_new == 5
    check_store(cfg, {sha256_bytes((REAL / n).read_bytes()) for n in NAMES})
    # the last pack (1 image) went, its image first, into new packs with the 5 new: 4 + 2
    assert [p.name for p in pack_files(cfg)] == ["000001.tar", "000003.tar", "000004.tar"]
    assert [members(p) for p in pack_files(cfg)] == [4, 4, 2]
    assert pack_files(cfg)[0].read_bytes() == full  # a full pack is never rewritten
    now = {r["image_id"]: r for r in manifest(cfg)}
    assert all((now[i]["pack"], now[i]["offset"]) == (r["pack"], r["offset"])
               for i, r in first.items() if r["pack"] == "packs/000001.tar")
    moved = [i for i, r in first.items() if r["pack"] == "packs/000002.tar"]
    assert len(moved) == 1 and (now[moved[0]]["pack"], now[moved[0]]["offset"]) == ("packs/000003.tar", 512)


def test_runs_that_add_a_few_images_leave_a_large_last_pack_alone(tmp_path):
    """A run rewrites about what it adds: a non-full pack larger than twice the images gathered so far
    stays as it is; small packs merge as they come, so they stay few."""
    src = folder(tmp_path, NAMES[:6])
    cfg = cfg_for(tmp_path, src, pack_images=8)
    scrape(cfg, progress=False)
    six = pack_files(cfg)[0].read_bytes()
    layout = []
    for names in (NAMES[6:7], NAMES[7:8], NAMES[8:10]):
        folder(tmp_path, names)
        assert scrape(cfg, progress=False).kept_new == len(names)
        layout.append([(p.name, members(p)) for p in pack_files(cfg)])
    assert layout[0] == [("000001.tar", 6), ("000002.tar", 1)]  # 6 > 2 x 1: the 6 not rewritten for 1 image
    assert layout[1] == [("000001.tar", 6), ("000003.tar", 2)]  # 1 <= 2 x 1: merged
    assert layout[2] == [("000004.tar", 8), ("000005.tar", 2)]  # 2 <= 2 x 2, then 6 <= 2 x 4: one full pack
    assert pack_files(cfg)[0].read_bytes()[:len(six) - packs.END] == six[:-packs.END]  # the 6 first, in order
    check_store(cfg, {sha256_bytes((REAL / n).read_bytes()) for n in NAMES})


def _crash_on_packed(monkeypatch, nth: int):
    """The run dies (as a kill would) just before journaling the nth pack it writes."""
    seen = []
    append = Store.append

    def dying(self, rec):
        if rec["kind"] == "packed":
            seen.append(rec["pack"])
            if len(seen) == nth:
                raise KeyboardInterrupt("killed")
        return append(self, rec)

    monkeypatch.setattr(Store, "append", dying)


@pytest.mark.parametrize("nth", [1, 2])
def test_a_kill_between_writing_a_pack_and_recording_it_loses_nothing(tmp_path, monkeypatch, nth):
    """1: a new pack (the last pack's image and 3 new) written, not recorded; 2: that recorded, the next not."""
    src = folder(tmp_path, NAMES[:5])
    cfg = cfg_for(tmp_path, src)
    scrape(cfg, progress=False)
    folder(tmp_path, NAMES[5:])
    with monkeypatch.context() as m:
        _crash_on_packed(m, nth)
        with pytest.raises(KeyboardInterrupt):
            scrape(cfg, progress=False)
    assert any(len(p.parent.name) == 2 for p in Path(cfg.out.images).rglob("*.*"))  # loose images left
    # on disk: the old packs, the new pack(s) written (the last one not recorded)
    assert [members(p) for p in pack_files(cfg)] == ([4, 1, 4] if nth == 1 else [4, 1, 4, 2])
    after = scrape(cfg, progress=False)
    assert after.kept_new == 0
    check_store(cfg, {sha256_bytes((REAL / n).read_bytes()) for n in NAMES})


def test_a_kill_between_the_index_and_deleting_the_loose_files_loses_nothing(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, folder(tmp_path, NAMES))
    calls = []
    remove_orphans = Store.remove_orphans

    def dying(self):  # the first call cleans up before packing; the second deletes the packed loose files
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return remove_orphans(self)

    with monkeypatch.context() as m:
        m.setattr(Store, "remove_orphans", dying)
        with pytest.raises(KeyboardInterrupt):
            scrape(cfg, progress=False)
    assert len(pack_files(cfg)) == 3
    scrape(cfg, progress=False)
    check_store(cfg, {sha256_bytes((REAL / n).read_bytes()) for n in NAMES})


@pytest.mark.parametrize("killed", [False, True])
def test_an_opt_out_takes_the_bytes_out_of_the_pack(tmp_path, monkeypatch, killed):
    cfg = cfg_for(tmp_path, folder(tmp_path, NAMES))
    scrape(cfg, progress=False)
    rows = manifest(cfg)
    gone = next(r for r in rows if r["pack"] == "packs/000001.tar" and r["offset"] > 512)  # not the first member
    data = read_image(cfg.out.images, gone)
    (tmp_path / "optout.csv").write_text(f"{OPTOUT_HEADER}2026-12-02,request,,,,,,{gone['image_id']},\n")
    if killed:  # the removal journaled, the pack not yet rewritten
        with monkeypatch.context() as m:
            m.setattr(packs, "write_pack", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
            with pytest.raises(KeyboardInterrupt):
                scrape(cfg, progress=False)
        assert data in pack_files(cfg)[0].read_bytes()  # still there: the next run takes it out
    scrape(cfg, progress=False)
    rest = {r["image_id"] for r in rows} - {gone["image_id"]}
    check_store(cfg, rest)
    chunk = data[len(data) // 2:len(data) // 2 + 4096]
    assert not any(chunk in (Path(cfg.out.images) / f).read_bytes() for f in store_files(cfg))
    assert len(pack_files(cfg)) == 3  # the other packs as they were


def test_detect_finds_the_same_faces_in_packed_images_as_in_files(tmp_path):
    names = ["afdr_detect_07.jpg", "s2p_13.png", "afdr_detect_01.jpg"]
    cfg = cfg_for(tmp_path, folder(tmp_path, names), pack_images=2)
    scrape(cfg, progress=False)
    assert len(pack_files(cfg)) == 2
    packed = detect_config(tmp_path / "packed")
    detect(packed, cfg.out.manifest, cfg.out.images, progress=False)
    write_loose_manifest(tmp_path / "loose.parquet", [REAL / n for n in names], REAL)
    loose = detect_config(tmp_path / "loose")
    detect(loose, tmp_path / "loose.parquet", REAL, progress=False)
    a, b = read_faces(packed.out.faces).to_pylist(), read_faces(loose.out.faces).to_pylist()
    assert a and [r["face_id"] for r in a] == [r["face_id"] for r in b]


def test_a_store_from_before_the_packs_is_packed_without_fetching_again(tmp_path):
    """A pulled store of one file per image (ab/<id>.<ext>, an index naming `path`): the next run
    packs its images and fetches nothing."""
    cfg = cfg_for(tmp_path, folder(tmp_path, NAMES[:5]))
    scrape(cfg, progress=False)
    root = Path(cfg.out.images)
    index = []
    for line in (root / "index.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["table"] == "kept":  # the record as the old store wrote it
            v = e["value"]
            rel = f"{v['image_id'][:2]}/{packs.member_name(v)}"
            (root / rel).parent.mkdir(exist_ok=True)
            (root / rel).write_bytes(read_image(root, v))
            e["value"] = {**{k: x for k, x in v.items() if k not in ("pack", "offset", "length")}, "path": rel}
        index.append(json.dumps(e, sort_keys=True) + "\n")
    (root / "index.jsonl").write_text("".join(index))
    shutil.rmtree(root / "packs")
    (root / "journal.jsonl").unlink()
    s = scrape(cfg, progress=False)
    assert (s.kept_new, s.already_done) == (0, 5)
    check_store(cfg, {sha256_bytes((REAL / n).read_bytes()) for n in NAMES[:5]})
