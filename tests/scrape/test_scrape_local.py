"""The folder source against hostile and changing folders (issue 21, items 2-5):
- a `.png` that is a device (a symlink to /dev/zero), a named pipe, a dangling symlink or a symlink
  loop is a recorded rejection, and the run goes on; nothing beyond `max_bytes` is ever read;
- a file changed under the same name (or another folder with the same names) is read again; a file
  touched but not changed is not;
- a run that stops before the store changed (a missing folder, a folder with nothing in it) leaves
  every out as it was, byte for byte."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from tasks.errors import Rejected, SourceError
from tasks.fileio import sha256_file
from tasks.scrape.local import copy_local
from tasks.scrape.run import scrape
from tests.support.fakebooru import REAL
from tests.support.scrape import manifest, scrape_cfg

NAMES = sorted(p.name for p in REAL.iterdir() if p.suffix == ".png")


def folder_cfg(tmp_path, folder, **over):
    return scrape_cfg(tmp_path, "http://unused.invalid", source="folder", folder=str(folder), **over)


def verdicts(cfg) -> dict[str, tuple[str, str]]:
    """post_id -> (reason, detail) of every post not kept"""
    return {r["post_id"]: (r["reason"], r["detail"]) for r in pq.read_table(cfg.out.rejected).to_pylist()}


def journal(cfg) -> list[dict]:
    with open(os.path.join(cfg.out.images, "journal.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_devices_pipes_and_broken_links_are_recorded_rejections_and_the_run_goes_on(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REAL / NAMES[0], src / "a_good.png")
    (src / "b_zero.png").symlink_to("/dev/zero")  # a character device: its size says 0, it never ends
    os.mkfifo(src / "c_pipe.png")  # opening it would wait for a writer forever
    (src / "d_dangling.png").symlink_to(src / "nowhere.png")
    (src / "e_loop.png").symlink_to(src / "e_loop.png")
    shutil.copy(REAL / NAMES[1], src / "g_good.png")
    cfg = folder_cfg(tmp_path, src)
    s = scrape(cfg, progress=False)
    assert s.kept_new == 2 and {r["post_id"] for r in manifest(cfg)} == {"a_good.png", "g_good.png"}
    got = verdicts(cfg)
    assert got["b_zero.png"] == ("not_a_file", "file:b_zero.png: a character device, not a regular file")
    assert got["c_pipe.png"] == ("not_a_file", "file:c_pipe.png: a named pipe, not a regular file")
    assert got["d_dangling.png"][0] == "unreadable" and "dangling symlink" in got["d_dangling.png"][1]
    assert got["e_loop.png"] == ("unreadable", "file:e_loop.png: a symlink loop")
    assert s.rejected == {"not_a_file": 2, "unreadable": 2} and s.failed == 0
    # recorded once: the next run finds them done; a link that now points at a picture is read
    (src / "d_dangling.png").unlink()
    (src / "d_dangling.png").symlink_to(REAL / NAMES[2])
    again = scrape(cfg, progress=False)
    assert again.kept_new == 1 and again.already_done == 5 and again.rejected == {}
    assert "d_dangling.png" in {r["post_id"] for r in manifest(cfg)}


def test_the_byte_limit_counts_the_bytes_read(tmp_path):
    png = REAL / NAMES[0]
    size = png.stat().st_size
    (tmp_path / "tmp").mkdir()
    dl = copy_local(str(png), "file:x.png", str(tmp_path / "tmp"), size)
    assert dl.size == size and dl.sha256 == sha256_file(png) and sha256_file(dl.path) == dl.sha256
    with pytest.raises(Rejected, match=f"too_large: file:x.png \\(> {size - 1} bytes\\)"):
        copy_local(str(png), "file:x.png", str(tmp_path / "tmp"), size - 1)
    assert os.listdir(tmp_path / "tmp") == [os.path.basename(dl.path)]  # the cut-off copy is gone
    src = tmp_path / "src"
    src.mkdir()
    by_size = sorted(REAL.iterdir(), key=lambda p: p.stat().st_size)
    small, big = by_size[0], by_size[-1]
    (src / ("small" + small.suffix)).symlink_to(small)
    (src / ("big" + big.suffix)).symlink_to(big)
    cfg = folder_cfg(tmp_path, src, http={"max_bytes": small.stat().st_size})
    s = scrape(cfg, progress=False)
    assert s.kept_new == 1 and s.rejected == {"too_large": 1}
    assert verdicts(cfg)["big" + big.suffix] == ("too_large", f"file:big{big.suffix} (> {small.stat().st_size} bytes)")


def test_a_file_changed_under_the_same_name_is_read_again(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, names in ((one, NAMES[:3]), (two, NAMES[3:6])):
        folder.mkdir()
        for i, n in enumerate(names):  # the same three names, other pictures
            shutil.copy(REAL / n, folder / f"pic_{i}.png")
    (one / "pic_3.png").write_bytes(b"not a picture")  # rejected, then replaced by one
    cfg = folder_cfg(tmp_path, one)
    first = scrape(cfg, progress=False)
    assert first.kept_new == 3 and first.rejected == {"not_image": 1}
    # touched, not changed: nothing is read again (its bytes are hashed once and found the same)
    os.utime(one / "pic_0.png", ns=(10**18, 10**18))
    same = scrape(cfg, progress=False)
    assert same.kept_new == 0 and same.already_done == 4
    assert journal(cfg)[-2] == {"kind": "seen", "source": "folder", "post_id": "pic_0.png",
                                "stat": list(_sig(one / "pic_0.png"))}
    # another folder with the same names: every file is read
    shutil.copy(REAL / NAMES[6], two / "pic_3.png")
    cfg = folder_cfg(tmp_path, two)
    second = scrape(cfg, progress=False)
    assert second.kept_new == 4 and second.already_done == 0
    kept = {r["image_id"] for r in manifest(cfg)}
    assert {sha256_file(p) for p in two.iterdir()} <= kept and len(kept) == 7  # the first folder's stay too
    assert pq.read_table(cfg.out.rejected).num_rows == 0  # pic_3.png is a picture now


def written(tmp_path) -> list:
    """Every file the stage writes (its own journal aside, which is no out)."""
    return sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.name != "journal.jsonl"
                  and "src" not in p.relative_to(tmp_path).parts)


def _sig(path):
    st = os.stat(path)
    return (st.st_mode & 0o170000, st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("case", ["missing folder", "empty folder"])
def test_a_run_that_stops_before_the_store_changed_changes_nothing(tmp_path, case):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REAL / NAMES[0], src / "a.png")
    cfg = folder_cfg(tmp_path, src)
    scrape(cfg, progress=False)
    outs = written(tmp_path)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in outs}
    if case == "missing folder":
        cfg = folder_cfg(tmp_path, tmp_path / "nowhere")
        message = "is not a directory"
    else:
        (src / "a.png").unlink()
        message = "no posts found"
    with pytest.raises(SourceError, match=message):
        scrape(cfg, progress=False)
    assert written(tmp_path) == outs and {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in outs} == before
