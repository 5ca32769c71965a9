"""detect's results cannot be corrupted: a crashing image is blamed alone, transient failures are
retried, and an interrupted run resumes to the very bytes of a clean run (real illustrations)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import tasks.detect.run as detect_run
import tasks.detect.state as detect_state
from tasks.detect.run import detect
from tasks.detect.runner import iter_results
from tasks.detect.state import State
from tasks.detect.work import FINAL_REASONS, TRANSIENT_REASONS, ImageResult, ImageTask, WorkSettings
from tests.support.detect import REAL, config, crash_on_marker, sha, tree, write_manifest

FILES = ["afdr_detect_07.jpg", "s2p_13.png", "s2p_16.png", "renpy_sylvie_green_normal.png", "afdr_detect_01.jpg",
         "s2p_25.png", "s2p_test_1.jpg"]


def test_a_crashing_image_is_blamed_alone(tmp_path):
    """A worker dies on one image while seven others are in flight with it: only that one is recorded."""
    tasks = [ImageTask(sha(REAL / n), str(REAL / n), 0, (REAL / n).stat().st_size, n) for n in FILES]
    tasks.insert(3, ImageTask("c" * 64, str(REAL / FILES[0]), 0, (REAL / FILES[0]).stat().st_size, "CRASH.jpg"))
    settings = WorkSettings.from_config(config(tmp_path))
    results = list(iter_results(tasks, settings, "processes", 2, work=crash_on_marker))
    assert [r.image_id for r in results] == [t.image_id for t in tasks]  # in task order, once each
    assert {r.image_id: r.reason for r in results if r.status != "ok"} == {"c" * 64: "worker_crashed"}
    assert sum(len(r.faces) for r in results) >= 6


@pytest.mark.parametrize("reason", sorted(TRANSIENT_REASONS | FINAL_REASONS))
def test_only_final_outcomes_are_cached(tmp_path, reason):
    state = State(tmp_path, "key", {"a" * 64, "b" * 64}, shard_rows=8)
    state.add(ImageResult("a" * 64, "bad", reason, "x"), "lbpcascade", 128)
    state.add(ImageResult("b" * 64, "ok", width=10, height=10), "lbpcascade", 128)
    state.checkpoint()
    again = State(tmp_path, "key", {"a" * 64, "b" * 64}, shard_rows=8)
    assert set(again.image_ids(final=True).to_pylist()) == ({"a" * 64, "b" * 64} if reason in FINAL_REASONS else {"b" * 64})


def test_missing_image_is_retried_once_it_exists(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(REAL / FILES[0], images / "late.jpg")
    write_manifest(tmp_path / "m.parquet", [images / "late.jpg", REAL / FILES[1]], images)
    (images / "late.jpg").rename(tmp_path / "aside.jpg")  # listed, not there yet
    cfg = config(tmp_path / "out")
    first = detect(cfg, tmp_path / "m.parquet", images, progress=False)
    rows = {r["image_id"]: r for r in pq.read_table(cfg.out.images).to_pylist()}
    late = sha(tmp_path / "aside.jpg")
    assert first.bad == {"missing": 1} and rows[late]["reason"] == "missing"
    assert str(tmp_path) not in rows[late]["detail"] and "late.jpg" in rows[late]["detail"]  # no machine path
    (tmp_path / "aside.jpg").rename(images / "late.jpg")
    second = detect(cfg, tmp_path / "m.parquet", images, progress=False)
    assert (second.processed, second.retried, second.reused) == (1, 1, 1) and not second.bad
    faces = pq.read_table(cfg.out.faces).to_pylist()
    assert any(r["image_id"] == late and r["drop_reason"] is None for r in faces)


def _stop_after(n: int):
    real = detect_run.iter_results

    def iterate(*args, **kwargs):
        for i, res in enumerate(real(*args, **kwargs)):
            if i == n:
                raise KeyboardInterrupt
            yield res
    return iterate


@pytest.mark.parametrize("stop_after,checkpoint_seconds", [(2, 300.0), (4, 0.0), (5, 300.0)])
def test_interrupted_run_resumes_to_the_clean_runs_bytes(tmp_path, monkeypatch, stop_after, checkpoint_seconds):
    """Stopped after a few images (with or without a checkpoint after every image), then rerun:
    every output file, crop shards and state included, equals a clean run's byte for byte."""
    files = sorted(REAL.iterdir())[:10]
    write_manifest(tmp_path / "m.parquet", files, tmp_path)
    clean = config(tmp_path / "clean", shard_rows=3, workers=2)
    detect(clean, tmp_path / "m.parquet", tmp_path, progress=False)

    cfg = config(tmp_path / "resumed", shard_rows=3, workers=1)
    monkeypatch.setattr(detect_state, "CHECKPOINT_SECONDS", checkpoint_seconds)
    monkeypatch.setattr(detect_run, "iter_results", _stop_after(stop_after))
    with pytest.raises(KeyboardInterrupt):
        detect(cfg, tmp_path / "m.parquet", tmp_path, progress=False)
    assert pq.read_table(Path(cfg.out.crops) / "state-images.parquet").num_rows == stop_after
    monkeypatch.undo()
    summary = detect(cfg, tmp_path / "m.parquet", tmp_path, progress=False)
    assert (summary.processed, summary.reused) == (10 - stop_after, stop_after)
    want, got = tree(tmp_path / "clean"), tree(tmp_path / "resumed")
    assert sorted(got) == sorted(want)
    assert [n for n in want if want[n] != got[n]] == []
    assert len([n for n in want if n.startswith("crops/shard-")]) >= 3


def test_outputs_do_not_depend_on_workers_or_machine_paths(tmp_path):
    """The same images in two places, 1 worker and 2 workers: the same bytes everywhere."""
    outs = {}
    for name, workers in (("a", 1), ("b", 2)):
        images = tmp_path / name / "images"
        images.mkdir(parents=True)
        for f in [REAL / n for n in FILES]:
            (images / f.name).symlink_to(f)
        (images / "gone.png").write_bytes(b"x")
        write_manifest(tmp_path / name / "m.parquet", sorted(images.iterdir()), images)
        (images / "gone.png").unlink()
        cfg = config(tmp_path / name / "out", workers=workers, shard_rows=4)
        detect(cfg, tmp_path / name / "m.parquet", images, progress=False)
        outs[name] = tree(tmp_path / name / "out")
    assert sorted(outs["a"]) == sorted(outs["b"])
    assert [n for n in outs["a"] if outs["a"][n] != outs["b"][n]] == []
    summary = json.loads(outs["a"]["summary.json"])
    assert summary["bad"] == {"missing": 1} and "processed" not in summary  # a metric of the data, not the run
    faces = pq.read_table(tmp_path / "a/out/faces.parquet")
    assert faces["face_id"].to_pylist() == sorted(faces["face_id"].to_pylist())
    images = pq.read_table(tmp_path / "a/out/images.parquet")
    assert images["image_id"].to_pylist() == sorted(images["image_id"].to_pylist())
    assert "seconds" not in images.column_names
