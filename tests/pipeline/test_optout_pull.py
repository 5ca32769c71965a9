"""What the image store needs travels with the data (issue 21, item 1): a project's scrape outs are
pushed to a DVC remote (a local directory), a fresh git clone pulls them, and an opt-out then
removes the image there exactly as in the original workspace: the same audit line (which artifact
versions held it: `contained_in`), nothing fetched again, the same outs. The store's journal stays
behind (DVC ignores it); its state, `data/raw/images/index.jsonl`, is part of the images out."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import yaml

from tests.conftest import SHARED
from tests.support.project import make_copy, run

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
PICTURES = ["afdr_detect_01.jpg", "s2p_23.png", "dbr_app1.jpg", "s2p_27.png"]


def scrape_outs(project) -> dict:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for o in lock["stages"]["scrape"]["outs"]}


def opt_out(project, image_id: str) -> None:
    with open(project / "optout.csv", "a", encoding="utf-8") as f:
        f.write(f"2026-12-02,takedown notice,,,,,,{image_id},\n")


def test_an_opt_out_in_a_pulled_clone_is_honoured_and_audited_as_in_the_original(tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for name in PICTURES:
        shutil.copy(SHARED / "data" / "real" / name, pictures / name)
    (tmp_path / "a").mkdir()
    a = make_copy(tmp_path / "a", {"scrape": {"folder": str(pictures), "filters": {"min_width": 0, "min_height": 0}}})
    run(["dvc", "repro", "scrape"], a)
    run(["dvc", "remote", "add", "-d", "shelf", str(tmp_path / "remote")], a)
    run(GIT + ["add", "-A"], a)
    run(GIT + ["commit", "-qm", "scraped"], a)
    run(["dvc", "push"], a)
    b = tmp_path / "b"
    run(["git", "clone", "-q", str(a), str(b)], tmp_path)
    run(["dvc", "config", "--local", "core.site_cache_dir", str(b / ".dvc" / "site-cache")], b)
    run(["dvc", "pull", "scrape"], b)
    assert not (b / "data/raw/images/journal.jsonl").exists()  # the journal did not travel; the index did
    assert (b / "data/raw/images/index.jsonl").read_bytes() == (a / "data/raw/images/index.jsonl").read_bytes()

    image = sorted(r["image_id"] for r in pq.read_table(a / "data/raw/manifest.parquet").to_pylist())[1]
    for project in (a, b):
        opt_out(project, image)
        r = run(["dvc", "repro", "scrape"], project)
        assert "no journal line names" not in r.stderr, r.stderr  # nothing of the store is taken for an orphan
        summary = json.loads((project / "data/raw/summary.json").read_text())
        assert summary["removed"] == 1 and summary["kept_new"] == 0, summary  # nothing fetched again
        assert summary["already_done"] == len(PICTURES) - 1 and summary["kept_total"] == len(PICTURES) - 1
    logs = [[json.loads(line) for line in (p / "data/raw/optout_log.jsonl").read_text().splitlines()] for p in (a, b)]
    assert [len(x) for x in logs] == [1, 1]
    (in_a,), (in_b,) = logs
    held = {(h["stage"], h["path"]) for h in in_b["contained_in"]}
    assert {("scrape", "data/raw/manifest.parquet"), ("scrape", "data/raw/images")} <= held, in_b
    assert in_b["image_id"] == image and in_b["previous"] == in_a["previous"] is not None
    assert {**in_b, "at": None} == {**in_a, "at": None}  # the same audit line, but for when
    log = "data/raw/optout_log.jsonl"  # holds the time
    assert {**scrape_outs(b), log: None} == {**scrape_outs(a), log: None}  # the same outs, the store's index too
