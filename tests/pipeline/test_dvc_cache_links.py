"""The Makefile's `.dvc/config.local` sets DVC's cache.type so that the workspace links into the
cache instead of holding a second copy, and a stage that appends to a persistent out in place
(as scrape's journal and train's plots.csv do) does not write through the link into the cache:
`dvc repro` unprotects (copies) a persistent out's linked files before the stage runs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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


def test_outs_link_into_the_cache_and_an_in_place_append_leaves_it_intact(tmp_path):
    p = tmp_path / "project"
    p.mkdir()
    run(["git", "init", "-q"], p)
    run(["make", "-o", "venv", "-f", str(ROOT / "Makefile"), "VENV=" + str(Path(VENV_BIN).parent),
         ".dvc/config.local"], p)  # -o venv: this venv, as it is
    assert run(["dvc", "config", "cache.type"], p).stdout.strip() == "hardlink,symlink"
    (p / "store").mkdir()
    (p / "store" / "log.txt").write_text("start\n")
    (p / "dvc.yaml").write_text(DVC_YAML)
    (p / "dep.txt").write_text("one\n")
    run(["dvc", "repro", "-q"], p)
    objects = {hashlib.md5(o.read_bytes()).hexdigest(): o for o in cache_objects(p)}
    for out in (p / "one.txt", p / "store" / "log.txt"):
        linked = os.path.realpath(out) if out.is_symlink() else out
        assert any(os.path.samefile(linked, o) for o in objects.values()), f"{out} is a copy, not a link"
    (p / "dep.txt").write_text("two\n")
    run(["dvc", "repro", "-q"], p)
    assert (p / "store" / "log.txt").read_text() == "start\none\ntwo\n"
    for o in cache_objects(p):  # every object still holds the bytes its name says, the first log.txt too
        assert hashlib.md5(o.read_bytes()).hexdigest() == o.parent.name + o.name, o
    assert len(cache_objects(p)) == 4  # log.txt twice, one.txt twice
    assert "up to date" in run(["dvc", "status"], p).stdout
