"""Property: over random sequences of detect reruns, exports, spreadsheet edits and merges,
no recorded decision is ever lost or changed, and the downstream face set always agrees."""

from __future__ import annotations

import codecs
import csv
import io
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.review_helpers import face_row, inputs, params_of, review_config, snapshot, tiny_png
from tasks.detect.dataset import ShardWriter, write_faces
from tasks.errors import ReviewError
from tasks.review import reviewed_faces
from tasks.review.csvio import read_decisions
from tasks.review.run import merge, run_review

N_IMAGES = 6
DETECTORS = ("lbpcascade", "animeface")

# detect: which images exist, a crop-box variant per image (a changed detect param moves
# boxes, so ids change), and which faces a filter drops
detect_step = st.tuples(st.just("detect"), st.sets(st.integers(0, N_IMAGES - 1), min_size=1),
                        st.lists(st.integers(0, 1), min_size=N_IMAGES, max_size=N_IMAGES),
                        st.sets(st.integers(0, 2 * N_IMAGES - 1), max_size=3))
edit_step = st.tuples(st.just("edit"), st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["1", "0", "x", "no", "yes", ""])),
                                                min_size=1, max_size=5),
                      st.sampled_from([",", ";"]), st.booleans())
cycle_step = edit_step.map(lambda e: ("cycle", *e[1:]))  # edit, then merge at once
merge_step = st.tuples(st.just("merge"), st.booleans())  # with --drop-missing or not
step = st.one_of(detect_step, edit_step, cycle_step, cycle_step, st.just(("export",)), merge_step)


def run_detect(root: Path, images: set[int], variants: list[int], drops: set[int]) -> None:
    """What a detect rerun leaves behind: a fresh faces.parquet and crop shards, stable ids."""
    shutil.rmtree(root / "crops", ignore_errors=True)
    writer = ShardWriter(root / "crops", "p", rows_per_shard=4)
    rows = []
    for img in sorted(images):
        for d, det in enumerate(DETECTORS):
            box = (img + variants[img] * 10, 0, img + variants[img] * 10 + 32, 32)
            row = face_row(f"image{img:02d}", det, box, None, score=0.1 * img,
                           drop_reason="filtered" if 2 * img + d in drops else None)
            row["shard"] = writer.add(row["face_id"], tiny_png(img * 2 + d))
            rows.append(row)
    writer.flush()
    write_faces(root / "faces.parquet", rows)


def edit_queue(path: Path, picks: list[tuple[int, str]], delimiter: str, bom: bool) -> None:
    """A reviewer fills in some verdicts and saves in their spreadsheet's dialect."""
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=";" if text.startswith("face_id;") else ","))
    if not rows:
        return
    for i, verdict in picks:
        rows[i % len(rows)]["false_positive"] = verdict
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + buf.getvalue().encode())


def current_faces(root: Path) -> tuple[set[str], set[str]]:
    from tasks.detect.dataset import read_faces

    t = read_faces(root / "faces.parquet")
    every = set(t.column("face_id").to_pylist())
    kept = {f for f, d in zip(t.column("face_id").to_pylist(), t.column("drop_reason").to_pylist()) if d is None}
    return every, kept


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=detect_step, steps=st.lists(step, min_size=2, max_size=12))
def test_no_decision_is_ever_lost_or_changed(first, steps):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = review_config(root, thumb_size=16, page_size=3, columns=2)
        inp = replace(inputs(root), manifest=None)  # no scrape manifest: urls stay empty
        run_detect(root, *first[1:])
        run_review(cfg, inp)
        recorded: dict[str, bool] = {}  # the model: every decision ever merged
        for s in steps:
            before = snapshot(root)
            fp_before = Path(cfg.decisions).read_bytes()
            try:
                if s[0] == "detect":
                    run_detect(root, *s[1:])
                elif s[0] == "edit":
                    edit_queue(Path(cfg.out.queue), *s[1:])
                elif s[0] == "cycle":
                    edit_queue(Path(cfg.out.queue), *s[1:])
                    before = snapshot(root)
                    s = ("merge", False)
                elif s[0] == "export":
                    stats = run_review(cfg, inp)
                    every, kept = current_faces(root)
                    assert {o["face_id"] for o in stats.orphaned} == set(recorded) - every  # reported, not dropped
                    queued = [line.split(",")[0] for line in Path(cfg.out.queue).read_text(encoding="utf-8-sig").splitlines()]
                    assert set(queued[1:]) == kept - set(recorded)
                if s[0] == "merge":
                    result = merge(cfg, inp, drop_missing=s[1])
                    _, now = read_decisions(cfg.decisions)
                    assert result.added == len(set(now) - set(recorded))
                    assert set(now) - set(recorded) <= current_faces(root)[0]  # only faces that exist enter
                    event(f"merge added {'some' if result.added else 'none'}")
                    for fid, d in now.items():
                        recorded.setdefault(fid, d.false_positive)
            except ReviewError as e:
                # refusals (unmerged verdicts, conflicts, a stale queue) change nothing
                assert s[0] in ("export", "merge"), e
                event(f"{s[0]} refused: {'conflict' if 'records' in str(e) else 'stale' if 'is not in' in str(e) else 'unmerged' if 'would be overwritten' in str(e) else 'no queue' if 'not found' in str(e) else e}")
                assert snapshot(root) == before
            # the invariant: the CSV holds exactly the recorded decisions, old lines byte for byte
            assert Path(cfg.decisions).read_bytes().startswith(fp_before)
            _, now = read_decisions(cfg.decisions)
            assert {k: d.false_positive for k, d in now.items()} == recorded
            # and downstream sees kept faces minus false positives (unreviewed: keep / drop)
            _, kept = current_faces(root)
            got = set(reviewed_faces(params_of(cfg, inp)).column("face_id").to_pylist())
            assert got == {f for f in kept if not recorded.get(f, False)}
            got_drop = set(reviewed_faces(params_of(replace(cfg, unreviewed="drop"), inp))
                           .column("face_id").to_pylist())
            assert got_drop == {f for f in kept if recorded.get(f) is False}
        event(f"decisions at the end: {min(len(recorded), 3)}{'+' if len(recorded) >= 3 else ''}")

