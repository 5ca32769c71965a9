"""The committed `.dvc/config` sets DVC's cache.type so that the workspace links into the cache
instead of holding a second copy, in every clone (a `dvc pull` into a fresh clone links too), and a
stage that appends to a persistent out in place (as scrape's journal and train's plots.csv do) does
not write through the link into the cache:
`dvc repro` unprotects (copies) a persistent out's linked files before the stage runs."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.project import VENV_BIN, run

DVC_YAML = """stages:
  grow:
    cmd: sh -c 'cat dep.txt >> store/log.txt && cat dep.txt > one.txt'
    deps: [dep.txt]
    outs:
      - store:
          persist: true
      - one.txt
"""


def cache_objects(project: Path) -> list[Path]:
    return [p for p in (project / ".dvc" / "cache" / "files" / "md5").rglob("*") if p.is_file()
            and not p.name.endswith(".dir")]


def linked(out: Path, project: Path) -> bool:
    """Whether `out` is (or points at) one of the project's cache objects."""
    target = os.path.realpath(out) if out.is_symlink() else out
    return any(os.path.samefile(target, o) for o in cache_objects(project))


def test_outs_link_into_the_cache_and_an_in_place_append_leaves_it_intact(tmp_path):
    p = tmp_path / "project"
    p.mkdir()
    run(["git", "init", "-q"], p)
    run(["make", "-o", "venv", "-f", str(ROOT / "Makefile"), "VENV=" + str(Path(VENV_BIN).parent),
         ".dvc/config.local"], p)  # -o venv: this venv, as it is
    (p / ".dvc" / "config").write_bytes((ROOT / ".dvc" / "config").read_bytes())  # the committed settings
    assert run(["dvc", "config", "cache.type"], p).stdout.strip() == "hardlink,symlink"
    (p / "store").mkdir()
    (p / "store" / "log.txt").write_text("start\n")
    (p / "dvc.yaml").write_text(DVC_YAML)
    (p / "dep.txt").write_text("one\n")
    run(["dvc", "repro", "-q"], p)
    for out in (p / "one.txt", p / "store" / "log.txt"):
        assert linked(out, p), f"{out} is a copy, not a link"
    (p / "dep.txt").write_text("two\n")
    run(["dvc", "repro", "-q"], p)
    assert (p / "store" / "log.txt").read_text() == "start\none\ntwo\n"
    for o in cache_objects(p):  # every object still holds the bytes its name says, the first log.txt too
        assert hashlib.md5(o.read_bytes()).hexdigest() == o.parent.name + o.name, o
    assert len(cache_objects(p)) == 4  # log.txt twice, one.txt twice
    assert "up to date" in run(["dvc", "status"], p).stdout

    # a teammate's `git clone` + `dvc pull` (no make, no config.local) links into the clone's cache too
    remote, clone = tmp_path / "remote", tmp_path / "clone"
    run(["dvc", "remote", "add", "-d", "here", str(remote)], p)
    run(["git", "add", "-A"], p)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "outs"], p)
    run(["dvc", "push", "-q"], p)
    run(["git", "clone", "-q", str(p), str(clone)], tmp_path)
    run(["dvc", "pull", "-q"], clone)
    for out in ("one.txt", "store/log.txt"):
        assert (clone / out).read_bytes() == (p / out).read_bytes()
        assert linked(clone / out, clone), f"the pulled {out} is a copy, not a link"


def test_the_review_queue_is_made_a_file_of_its_own_before_anyone_edits_it(tmp_path):
    """queue.csv is the out a person saves over: linked read-only into the cache, an in-place save would
    fail, or (as root) change the cache object. `python -m tasks.review edit` (make demo and the flow's
    review stop call the same function) unprotects it: a writable copy of the same bytes, `dvc status`
    clean, and an in-place edit then leaves every cache object holding the bytes its name says."""
    from tasks.errors import ReviewError
    from tasks.review.worksheet import linked as dvc_linked
    from tasks.review.worksheet import make_editable

    p = tmp_path / "project"
    p.mkdir()
    run(["git", "init", "-q"], p)
    run(["make", "-o", "venv", "-f", str(ROOT / "Makefile"), "VENV=" + str(Path(VENV_BIN).parent),
         ".dvc/config.local"], p)
    (p / ".dvc" / "config").write_bytes((ROOT / ".dvc" / "config").read_bytes())
    (p / "dvc.yaml").write_text("stages:\n  review:\n    cmd: sh -c 'mkdir -p review && cat dep.txt > review/queue.csv'\n"
                                "    deps: [dep.txt]\n    outs:\n      - review/queue.csv:\n          persist: true\n")
    (p / "dep.txt").write_text("face_id,false_positive\nabc,\n")
    run(["dvc", "repro", "-q"], p)
    queue = p / "review" / "queue.csv"
    assert linked(queue, p) and dvc_linked(queue)
    assert os.geteuid() == 0 or not os.access(queue, os.W_OK)  # read-only (root may write all the same)
    edit = run([sys.executable, "-m", "tasks.review", "edit", "--params", str(ROOT / "params.yaml")], p)  # as make demo
    assert "review/queue.csv: a writable copy now" in edit.stdout, edit.stdout
    assert not dvc_linked(queue) and not linked(queue, p) and queue.stat().st_mode & 0o200
    assert queue.read_text() == "face_id,false_positive\nabc,\n"
    assert "up to date" in run(["dvc", "status"], p).stdout
    with open(queue, "r+") as f:  # a spreadsheet saving in place
        f.seek(0, 2)
        f.write("def,1\n")
    for o in cache_objects(p):
        assert hashlib.md5(o.read_bytes()).hexdigest() == o.parent.name + o.name, o
    assert "review/queue.csv" in run(["dvc", "status"], p).stdout  # the edit shows: review reruns, and refuses unmerged verdicts
    assert make_editable("review/queue.csv", p) is False  # already a file of its own: nothing to do
    (p / "review" / "queue.csv").unlink()
    with pytest.raises(ReviewError, match="dvc repro review"):
        make_editable("review/queue.csv", p)
