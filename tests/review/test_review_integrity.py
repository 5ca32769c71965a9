"""A reviewer's verdicts cannot be lost, misattributed or left unapplied: they follow their
duplicate group, a killed export never points the CSV at another face's thumbnail, and two
processes never interleave their writes (real face crops, real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

import tasks.review.queue as review_queue
from tasks.artifacts.decisions import read_decisions
from tasks.artifacts.faces import write_faces
from tasks.errors import ReviewError
from tasks.review.merge import merge
from tasks.review.run import run_review
from tests.support.review import (
    build_faces,
    cell_diff,
    crop_of,
    inputs,
    params_file,
    png_bytes,
    read_queue,
    review_config,
    reviewed_faces,
    sheet_pages,
    snapshot,
    sprite_cell,
    thumbnail_link,
)

ROOT = Path(__file__).resolve().parents[2]
HEADER = "face_id,false_positive,reviewer,note\n"


@pytest.fixture(scope="module")
def crops(shared) -> list[tuple[str, bytes]]:
    return [(f.name, png_bytes(f)) for f in sorted((shared / "data/faces").glob("dlgan_*.jpg"))[:30]]


def test_verdict_follows_its_duplicate_group(tmp_path, crops):
    """New images make detect keep another member of a near-duplicate group: the verdict on the
    old pick still applies to the group's kept face."""
    rows = build_faces(tmp_path, crops[:6])
    a, b, c, d, e = (r["face_id"] for r in rows[:5])
    rows[1].update(drop_reason="duplicate", duplicate_of=a)  # run 1: a kept, b its duplicate
    rows[4].update(drop_reason="duplicate", duplicate_of=d)  # and d kept, e its duplicate
    write_faces(tmp_path / "faces.parquet", rows)
    cfg = review_config(tmp_path)
    Path(cfg.decisions).write_text(f"{HEADER}{a},1,ann,a hand\n{e},0,ann,\n")
    inp = inputs(tmp_path)
    assert a not in set(reviewed_faces(cfg, inp).column("face_id").to_pylist())

    # run 2: a larger copy c is kept now; a and b point at it. d stays kept, decided through e.
    rows[0].update(drop_reason="duplicate", duplicate_of=c)
    rows[1].update(duplicate_of=c)
    write_faces(tmp_path / "faces.parquet", rows)
    keep = set(reviewed_faces(cfg, inp).column("face_id").to_pylist())
    assert c not in keep and d in keep  # the false positive on a applies to c
    drop = set(reviewed_faces(replace(cfg, unreviewed="drop"), inp).column("face_id").to_pylist())
    assert drop == {d}  # fine on e (d's duplicate) counts as checked
    stats = run_review(cfg, inp)
    queued = {q["face_id"] for q in read_queue(Path(cfg.out.queue))}
    assert c not in queued and d not in queued and queued == {rows[5]["face_id"]}
    assert stats.via_duplicates == 2 and stats.total.false_positive == 1 and stats.downstream == 2
    saved = json.loads(Path(cfg.out.stats).read_text())
    assert saved["decided_via_duplicates"] == 2 and saved["total"]["reviewed"] == 2


def test_a_killed_export_never_points_the_csv_at_other_faces(tmp_path, crops, monkeypatch):
    """The queue is regenerated (a colleague merged verdicts, pages shift) and the run dies just
    before queue.csv is replaced: every queue.csv row still shows its own face, and so does
    every cell of queue.html's pages."""
    rows = build_faces(tmp_path, crops)
    cfg = review_config(tmp_path, page_size=8, columns=4, thumb_size=48, pages_per_file=2)
    inp = inputs(tmp_path)
    run_review(cfg, inp)
    first = read_queue(Path(cfg.out.queue))
    Path(cfg.decisions).write_text(HEADER + "".join(f"{q['face_id']},0,,\n" for q in first[:5]))

    real_open = review_queue.atomic_open

    def die_before_the_csv(path, *args, **kwargs):
        if Path(path) == Path(cfg.out.queue):
            raise KeyboardInterrupt("killed")
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(review_queue, "atomic_open", die_before_the_csv)
    with pytest.raises(KeyboardInterrupt):
        run_review(cfg, inp)
    monkeypatch.undo()

    by_id = {r["face_id"]: crop_of(tmp_path, r["face_id"]) for r in rows}
    review_dir = Path(cfg.out.queue).parent

    def shows(page: dict, index: int, fid: str) -> bool:
        cell = sprite_cell(page["sprite"], index, 48, 4)
        diffs = {f: cell_diff(cell, png) for f, png in by_id.items()}
        return min(diffs, key=diffs.get) == fid and diffs[fid] < 15 and page["faces"][index][0] == fid

    queue = read_queue(Path(cfg.out.queue))
    assert [q["face_id"] for q in queue] == [q["face_id"] for q in first]  # the old CSV, as it was
    for q in queue:
        sheet, version, page, cell = thumbnail_link(q["thumbnail"])
        assert sheet == "queue.html"
        assert shows(sheet_pages(Path(cfg.out.thumbs) / version)[page], cell - 1, q["face_id"]), q["thumbnail"]
    html = Path(cfg.out.html).read_text()
    meta = json.loads(html.split("const META = ")[1].split(";</script>")[0])
    pages = sheet_pages(Path(cfg.out.html).parent / meta["dir"])
    assert sorted(pages) == list(range(1, meta["pages"] + 1)) and meta["per_file"] == 2
    assert len({p["part"] for p in pages.values()}) == (meta["pages"] + 1) // 2 > 1
    for n, page in pages.items():
        assert page["version"] == meta["version"]
        for i, face in enumerate(page["faces"]):
            assert shows(page, i, face[0]), (n, i)
    assert meta["total"] == len(first) - 5

    stats = run_review(cfg, inp)  # the next run brings both to one version and deletes the old one
    assert [p.name for p in Path(cfg.out.thumbs).iterdir()] == [stats.version] == [meta["version"]]
    assert all(thumbnail_link(q["thumbnail"])[1] == stats.version for q in read_queue(Path(cfg.out.queue)))


def _merge_cmd(params: Path, source: Path, reviewer: str, faces: str) -> list[str]:
    return [sys.executable, "-m", "tasks.review", "merge", "--params", str(params), "--from", str(source),
            "--reviewer", reviewer, "--faces", faces]


def test_a_second_process_is_refused_while_a_merge_holds_the_csv(tmp_path, crops):
    """Process 1 is a merge stuck reading its input (a named pipe); process 2, another merge,
    is refused with a clear message and writes nothing; so is the review stage. Once process 1
    finishes, process 2 goes through, and the CSV holds both, each line once."""
    rows = build_faces(tmp_path, crops[:8])
    cfg = review_config(tmp_path)
    inp = inputs(tmp_path)
    params = params_file(tmp_path, cfg, inp)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fifo = tmp_path / "slow.csv"
    os.mkfifo(fifo)
    first = subprocess.Popen(_merge_cmd(params, fifo, "first", inp.faces), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        lock = Path(cfg.decisions + ".lock")
        for _ in range(600):  # the holder has the lock once it names itself in the lock file
            if lock.exists() and lock.read_text().startswith("merge (pid"):
                break
            first.poll()
            assert first.returncode is None, first.communicate()
            threading.Event().wait(0.05)
        else:
            pytest.fail("the first merge never took the lock")
        (tmp_path / "mine.csv").write_text(f"face_id,false_positive\n{rows[1]['face_id']},1\n")
        before = snapshot(tmp_path / "review")
        second = subprocess.run(_merge_cmd(params, tmp_path / "mine.csv", "second", inp.faces), cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stdout + second.stderr
        assert second.stderr.startswith("error: ") and second.stderr.count("\n") == 1
        assert f"{cfg.decisions} is in use by merge (pid {first.pid}" in second.stderr
        with pytest.raises(ReviewError, match="is in use by merge"):
            run_review(cfg, inp)
        assert snapshot(tmp_path / "review") == before
    finally:  # let the first merge read its input and finish (if it still waits for it)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no reader: the first merge is gone
            fd = None
        if fd is not None:
            os.write(fd, f"face_id,false_positive\n{rows[0]['face_id']},1\n".encode())
            os.close(fd)
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and "merged 1 verdicts" in out, err
    again = subprocess.run(_merge_cmd(params, tmp_path / "mine.csv", "second", inp.faces), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    text = Path(cfg.decisions).read_text()
    assert text == f"{HEADER}{rows[0]['face_id']},1,first,\n{rows[1]['face_id']},1,second,\n"
    assert Path(cfg.decisions + ".lock").read_text() == ""  # idle


def test_concurrent_merges_never_lose_a_verdict(tmp_path, crops):
    """Six merges started at once: each one either merges or is refused whole; retried, all land."""
    rows = build_faces(tmp_path, crops[:12])
    cfg = review_config(tmp_path)
    inp = inputs(tmp_path)
    params = params_file(tmp_path, cfg, inp)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sources = []
    for n in range(6):
        src = tmp_path / f"v{n}.csv"
        src.write_text("face_id,false_positive\n" + "".join(f"{r['face_id']},{n % 2}\n" for r in rows[2 * n:2 * n + 2]))
        sources.append(src)
    procs = [subprocess.Popen(_merge_cmd(params, s, f"r{n}", inp.faces), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n, s in enumerate(sources)]
    results = [p.communicate(timeout=180) + (p.returncode,) for p in procs]
    refused = [n for n, (_, err, code) in enumerate(results) if code != 0]
    for n in refused:
        assert "is in use by merge" in results[n][1], results[n]
    _, decisions = read_decisions(cfg.decisions)
    merged = {n for n in range(6) if n not in refused}
    assert set(decisions) == {r["face_id"] for n in merged for r in rows[2 * n:2 * n + 2]}
    for n in refused:
        assert merge(cfg, inp.faces, sources[n], f"r{n}").added == 2
    _, decisions = read_decisions(cfg.decisions)
    assert {f: (d.false_positive, d.reviewer) for f, d in decisions.items()} == {
        r["face_id"]: (bool(n % 2), f"r{n}") for n in range(6) for r in rows[2 * n:2 * n + 2]}
    assert len(Path(cfg.decisions).read_text().splitlines()) == 13
