"""DVC tracks the image store's packs, not its images (issue 22): a `dvc repro scrape` of N images
gives ceil(N / scrape.pack_images) pack files and the index in the images out, and a second
scrape of more images leaves the full packs' objects as they were and adds new ones (the last,
small pack's images with them)."""

from __future__ import annotations

import json
import shutil

import yaml

from tests.conftest import SHARED
from tests.support.project import make_copy, run

PICTURES = sorted(p.name for p in (SHARED / "data" / "real").iterdir())[:9]


def listing(project) -> dict[str, str]:
    """relpath -> md5 of the images out as dvc.lock names it (its `.dir` object in the cache)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    md5 = next(o["md5"] for o in lock["stages"]["scrape"]["outs"] if o["path"] == "data/raw/images")
    obj = project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    return {e["relpath"]: e["md5"] for e in json.loads(obj.read_text())}


def test_a_second_scrape_keeps_the_full_packs_and_adds_packs(tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for name in PICTURES[:6]:
        shutil.copy(SHARED / "data" / "real" / name, pictures / name)
    (tmp_path / "a").mkdir()
    a = make_copy(tmp_path / "a", {"scrape": {"folder": str(pictures), "pack_images": 4,
                                              "filters": {"min_width": 0, "min_height": 0}}})
    run(["dvc", "repro", "scrape"], a)
    first = listing(a)
    assert sorted(first) == ["index.jsonl", "packs/000001.tar", "packs/000002.tar"]  # 6 images: 2 files, not 6

    for name in PICTURES[6:]:
        shutil.copy(SHARED / "data" / "real" / name, pictures / name)
    run(["dvc", "repro", "scrape"], a)
    second = listing(a)
    # the last pack's 2 images and the 3 new: a full pack and one of 1; the old last pack gone
    assert sorted(second) == ["index.jsonl", "packs/000001.tar", "packs/000003.tar", "packs/000004.tar"]
    assert second["packs/000001.tar"] == first["packs/000001.tar"]  # full: the same object
    assert not [p for p in (a / "data/raw/images").rglob("*") if p.is_file() and len(p.parent.name) == 2]
