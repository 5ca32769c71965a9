"""Two clean `dvc repro review`s of the same inputs, in two fresh copies of the project at two
paths, one with 1 detect worker and one with 2, give byte-identical detect and review outs:
the same md5 for every out in dvc.lock, and the same bytes in every file."""

from __future__ import annotations

import hashlib

import pytest
import yaml

from tests.support.detect import tree
from tests.support.project import make_copy, run

STAGES = ("detect", "review")
OUT_DIRS = ("data/faces", "review")


def outs(lock: dict, stage: str) -> dict[str, tuple]:
    """path -> (md5, size, nfiles) of every out and metric of a stage, as dvc.lock records them."""
    entries = lock["stages"][stage].get("outs", [])
    return {e["path"]: (e["md5"], e.get("size"), e.get("nfiles")) for e in entries}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    runs = []
    for name, workers in (("one", 1), ("two", 2)):
        project = make_copy(tmp_path_factory.mktemp(name), {"detect": {"workers": workers, "shard_rows": 8}})
        run(["dvc", "repro", "review"], project)
        runs.append(project)
    return runs


def test_detect_and_review_outs_have_the_same_md5(two_runs):
    a, b = (yaml.safe_load((p / "dvc.lock").read_text()) for p in two_runs)
    for stage in STAGES:
        assert outs(a, stage) and outs(a, stage) == outs(b, stage), stage


def test_every_file_is_byte_identical(two_runs):
    a, b = two_runs
    for rel in OUT_DIRS:
        fa, fb = tree(a / rel), tree(b / rel)
        assert sorted(fa) == sorted(fb), rel
        differ = [n for n in fa if fa[n] != fb[n]]
        assert differ == [], {n: (hashlib.md5(fa[n]).hexdigest(), hashlib.md5(fb[n]).hexdigest()) for n in differ}
    shards = [n for n in tree(a / "data/faces/crops") if n.startswith("shard-")]
    assert len(shards) >= 3  # several shards, filled by two workers in whatever order they finished
