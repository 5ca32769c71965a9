"""The image store's state travels with the data (issue 21, item 1): `images/index.jsonl`, part of
the images out, holds every post's last verdict, so a store without its journal (a clone after
`dvc pull`) or with another version's (a `dvc checkout`) knows exactly what the original knew."""

from __future__ import annotations

import shutil

from tasks.scrape.run import scrape
from tasks.scrape.store import STATE, Store
from tests.support.fakebooru import REAL
from tests.support.scrape import OPTOUT_HEADER, manifest, scrape_cfg

NAMES = sorted(p.name for p in REAL.iterdir() if p.suffix == ".png")


def state(store: Store) -> dict:
    strip = lambda v: {f: x for f, x in v.items() if f != "stat"} if isinstance(v, dict) else v  # noqa: E731
    return {t: {k: strip(v) for k, v in getattr(store, t).items()} for t in STATE}


def loaded(cfg) -> dict:
    store = Store(cfg.out.images)
    try:
        return state(store)
    finally:
        store.close()


def test_a_store_without_its_journal_knows_what_the_original_knew(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i, n in enumerate(NAMES[:4]):
        shutil.copy(REAL / n, src / f"p{i}.png")
    shutil.copy(REAL / NAMES[0], src / "p9_twin.png")  # the same bytes as p0: a duplicate
    (src / "p5_text.png").write_bytes(b"not a picture")  # rejected
    cfg = scrape_cfg(tmp_path, "http://unused.invalid", source="folder", folder=str(src))
    scrape(cfg, progress=False)
    removed = next(r for r in manifest(cfg) if r["post_id"] == "p1.png")["image_id"]
    (tmp_path / "optout.csv").write_text(f"{OPTOUT_HEADER}2026-12-02,request,,,,,,{removed},\n")
    first = scrape(cfg, progress=False)
    assert first.removed == 1 and first.duplicate == 0 and first.already_done == 5
    images = tmp_path / "images"
    index = (images / "index.jsonl").read_bytes()
    original = loaded(cfg)
    assert original["removed"] and original["kept"] and any(v["kind"] == "duplicate" for v in original["done"].values())

    (images / "journal.jsonl").unlink()  # what `dvc pull` brings: the images and the index, no journal
    assert loaded(cfg) == original
    again = scrape(cfg, progress=False)
    assert (again.kept_new, again.already_done, again.removed, again.skipped["optout"]) == (0, 5, 0, 1)
    assert (images / "index.jsonl").read_bytes() == index  # the same state, the same bytes

    # a journal of another version (a `dvc checkout` of older data): the index there is what the files are
    stale = (images / "journal.jsonl").read_text()
    (tmp_path / "optout.csv").write_text(OPTOUT_HEADER)  # the request withdrawn: p1 comes back
    back = scrape(cfg, progress=False)
    assert back.kept_new == 1 and len(manifest(cfg)) == 4
    newer = (images / "index.jsonl").read_bytes()
    (images / "journal.jsonl").write_text(stale)  # the newer index, the older journal
    assert loaded(cfg)["kept"].keys() == {r["image_id"] for r in manifest(cfg)}
    assert (images / "index.jsonl").read_bytes() == newer


def test_the_index_is_the_same_bytes_for_the_same_files(tmp_path):
    """Two stores of the same files at two paths, one fetch thread and four (another completion
    order, another machine path and mtimes): the same index, so the images out hashes the same."""
    indexes = []
    for name, threads in (("one", 1), ("four", 4)):
        src = tmp_path / name / "src"
        src.mkdir(parents=True)
        for i, n in enumerate(NAMES[:6]):
            shutil.copy(REAL / n, src / f"p{i}.png")
        shutil.copy(REAL / NAMES[5], src / "p0_twin.png")  # a duplicate, judged in whatever order
        cfg = scrape_cfg(tmp_path / name, "http://unused.invalid", source="folder", folder=str(src),
                         http={"concurrency": threads})
        scrape(cfg, progress=False)
        indexes.append((tmp_path / name / "images" / "index.jsonl").read_bytes())
    assert indexes[0] == indexes[1] and indexes[0].count(b"\n") > 6
