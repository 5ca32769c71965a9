"""Property: over random sequences of detect reruns (near-duplicate groups whose kept member
changes among them), exports, spreadsheet edits and merges, no recorded decision is ever lost
or changed, and the downstream face set always agrees with the decisions, applied per group."""

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

from tasks.artifacts.decisions import read_decisions
from tasks.artifacts.faces import ShardWriter, write_faces
from tasks.errors import ReviewError
from tasks.review.merge import merge
from tasks.review.run import run_review
from tests.support.review import face_row, inputs, review_config, reviewed_faces, snapshot, tiny_png

N_IMAGES = 6
DETECTORS = ("lbpcascade", "animeface")

# detect: which images exist, a crop-box variant per image (a changed detect param moves
# boxes, so ids change), which faces a filter drops, and for some images which of their two
# faces is kept while the other is its near-duplicate (new images can make detect re-pick)
detect_step = st.tuples(st.just("detect"), st.sets(st.integers(0, N_IMAGES - 1), min_size=1),
                        st.lists(st.integers(0, 1), min_size=N_IMAGES, max_size=N_IMAGES),
                        st.sets(st.integers(0, 2 * N_IMAGES - 1), max_size=3),
                        st.dictionaries(st.integers(0, N_IMAGES - 1), st.integers(0, 1), max_size=3))
edit_step = st.tuples(st.just("edit"), st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["1", "0", "x", "no", "yes", ""])),
                                                min_size=1, max_size=5),
                      st.sampled_from([",", ";"]), st.booleans())
cycle_step = edit_step.map(lambda e: ("cycle", *e[1:]))  # edit, then merge at once
merge_step = st.tuples(st.just("merge"), st.booleans())  # with --keep-missing or not
step = st.one_of(detect_step, edit_step, cycle_step, cycle_step, st.just(("export",)), merge_step)


def run_detect(root: Path, images: set[int], variants: list[int], drops: set[int], dups: dict[int, int]) -> None:
    """What a detect rerun leaves behind: a fresh faces.parquet and crop shards, stable ids."""
    shutil.rmtree(root / "crops", ignore_errors=True)
    writer = ShardWriter(root / "crops", "p", rows_per_shard=4)
    rows = []
    for img in sorted(images):
        pair = []
        for d, det in enumerate(DETECTORS):
            box = (img + variants[img] * 10, 0, img + variants[img] * 10 + 32, 32)
            row = face_row(f"image{img:02d}", det, box, None, score=0.1 * img,
                           drop_reason="filtered" if 2 * img + d in drops and img not in dups else None)
            row["shard"] = writer.add(row["face_id"], tiny_png(img * 2 + d))
            pair.append(row)
        if img in dups:  # one face kept, the other its near-duplicate
            kept, dup = pair[dups[img]], pair[1 - dups[img]]
            dup["drop_reason"], dup["duplicate_of"] = "duplicate", kept["face_id"]
        rows += pair
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
    from tasks.artifacts.faces import read_faces

    t = read_faces(root / "faces.parquet")
    every = set(t.column("face_id").to_pylist())
    kept = {f for f, d in zip(t.column("face_id").to_pylist(), t.column("drop_reason").to_pylist()) if d is None}
    return every, kept


def applied(root: Path, recorded: dict[str, bool]) -> dict[str, bool]:
    """The model of the group rule: kept face -> is it a false positive, for kept faces with a
    verdict on themselves or on a near-duplicate of theirs (a false positive anywhere wins)."""
    from tasks.artifacts.faces import read_faces

    rows = read_faces(root / "faces.parquet").to_pylist()
    groups = {r["face_id"]: [r["face_id"]] for r in rows if r["drop_reason"] is None}
    for r in rows:
        if r["duplicate_of"] in groups:
            groups[r["duplicate_of"]].append(r["face_id"])
    verdicts = {k: [recorded[m] for m in ms if m in recorded] for k, ms in groups.items()}
    return {k: any(v) for k, v in verdicts.items() if v}


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
                    assert set(queued[1:]) == kept - set(applied(root, recorded))
                if s[0] == "merge":
                    result = merge(cfg, inp.faces, keep_missing=s[1])
                    _, now = read_decisions(cfg.decisions)
                    assert result.added == len(set(now) - set(recorded))
                    new_orphans = set(now) - set(recorded) - current_faces(root)[0]
                    assert result.orphans == len(new_orphans) and (s[1] or not new_orphans)  # only when asked
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
            # and downstream sees kept faces minus false positives (unreviewed: keep / drop), per group
            _, kept = current_faces(root)
            verdict = applied(root, recorded)
            got = set(reviewed_faces(cfg, inp).column("face_id").to_pylist())
            assert got == {f for f in kept if not verdict.get(f, False)}
            got_drop = set(reviewed_faces(replace(cfg, unreviewed="drop"), inp)
                           .column("face_id").to_pylist())
            assert got_drop == {f for f in kept if verdict.get(f) is False}
            if any(verdict.get(k) != recorded.get(k) for k in verdict):
                event("a verdict applied through a duplicate group")
        event(f"decisions at the end: {min(len(recorded), 3)}{'+' if len(recorded) >= 3 else ''}")

