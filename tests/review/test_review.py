"""The review stage: export -> edit -> merge -> the downstream face set, on real face crops."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from tasks.artifacts.decisions import escape_cell, parse_verdict, read_decisions, unescape_cell
from tasks.artifacts.faces import write_faces
from tasks.artifacts.reviewed import read_reviewed
from tasks.errors import ConfigError, ReviewError
from tasks.params.review import ReviewConfig
from tasks.review.merge import merge
from tasks.review.run import run_review
from tasks.typed import build
from tests.support.review import (
    build_faces,
    cell_diff,
    crop_of,
    inputs,
    params_file,
    png_bytes,
    read_queue,
    refused,
    review_config,
    reviewed_faces,
    sheet_pages,
    snapshot,
    sprite_cell,
    thumbnail_link,
    tiny_png,
    write_manifest,
    write_queue,
)

ROOT = Path(__file__).resolve().parents[2]
N_CROPS = 60


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared):
    """60 real crops (dlgan 96x96 JPEGs and afdr PNGs) as a faces dataset; every 10th face dropped."""
    root = tmp_path_factory.mktemp("faces")
    files = sorted((shared / "data/faces").glob("dlgan_*.jpg"))[:40] + sorted((shared / "data/faces").glob("afdr_*.png"))[:20]
    rows = build_faces(root, [(f.name, png_bytes(f)) for f in files], drop_every=10)
    write_manifest(root / "manifest.parquet", [r["image_id"] for r in rows[: N_CROPS // 2]])  # half have no url
    return root, rows


def kept_ids(rows):
    return {r["face_id"] for r in rows if r["drop_reason"] is None}


def test_export_edit_merge_excludes_false_positives(dataset, tmp_path):
    data, rows = dataset
    cfg = review_config(tmp_path, page_size=20, columns=6, thumb_size=48)
    inp = inputs(data)
    stats = run_review(cfg, inp)
    kept = kept_ids(rows)
    assert stats.queued == len(kept) == 54 and stats.pages == 3

    queue = read_queue(Path(cfg.out.queue))
    assert list(queue[0]) == ["face_id", "thumbnail", "url", "detector", "score", "false_positive", "reviewer", "note"]
    assert {q["face_id"] for q in queue} == kept
    assert all(q["false_positive"] == "" for q in queue)
    by_id = {r["face_id"]: r for r in rows}
    with_url = {r["image_id"] for r in rows[: N_CROPS // 2]}
    for q in queue:
        assert (q["url"] != "") == (by_id[q["face_id"]]["image_id"] in with_url)  # no manifest row: empty url
        assert q["detector"] == by_id[q["face_id"]]["detector"]
    # each thumbnail names a sprite page and a cell that shows that very face
    review_dir = Path(cfg.out.queue).parent
    version = stats.version
    assert len(version) == 12 and json.loads(Path(cfg.out.stats).read_text())["queue_version"] == version
    assert json.loads(Path(cfg.out.metrics).read_text()) == {"faces": 54, "reviewed": 0, "pending": 54, "fp_rate": None}
    pages = sheet_pages(Path(cfg.out.thumbs) / version)
    for q in queue[::7]:
        sheet, v, page, cell = thumbnail_link(q["thumbnail"])
        assert (sheet, v) == ("queue.html", version), q["thumbnail"]
        got = sprite_cell(pages[page]["sprite"], cell - 1, 48, 6)
        assert pages[page]["faces"][cell - 1][0] == q["face_id"]
        diffs = {f: cell_diff(got, crop_of(data, f)) for f in (q["face_id"], queue[queue.index(q) - 1]["face_id"])}
        assert diffs[q["face_id"]] < 8 and diffs[q["face_id"]] < min(diffs.values()) + 1e-9, (q["thumbnail"], diffs)
    html = Path(cfg.out.html).read_text()
    assert '"pages": 3' in html and f'"dir": "thumbs/{version}"' in html and "part-00001" not in html  # on demand
    assert [p.name for p in Path(cfg.out.thumbs).iterdir()] == [version]  # one version of the queue
    # the three pages in one part file (review.pages_per_file: 8), not a sprite and a script each
    assert sorted(p.name for p in (Path(cfg.out.thumbs) / version).iterdir()) == ["index.js", "part-00001.js"]
    assert sorted(pages) == [1, 2, 3] and {p["part"] for p in pages.values()} == {1}

    # the reviewer fills in five rows in a spreadsheet
    fps, fine = [q["face_id"] for q in queue[:3]], [q["face_id"] for q in queue[3:5]]
    for q in queue[:3]:
        q["false_positive"] = "1"
    queue[3]["false_positive"], queue[4]["false_positive"] = "0", "no"
    queue[0]["note"] = "a hand, not a face"
    write_queue(Path(cfg.out.queue), queue)
    result = merge(cfg, inp.faces, reviewer="ann")
    assert (result.added, result.added_fp, result.undecided) == (5, 3, len(kept) - 5)
    _, decisions = read_decisions(cfg.decisions)
    assert {k: d.false_positive for k, d in decisions.items()} == {**dict.fromkeys(fps, True), **dict.fromkeys(fine, False)}
    assert decisions[fps[0]].note == "a hand, not a face" and decisions[fps[0]].reviewer == "ann"

    before = Path(cfg.decisions).read_bytes()
    assert merge(cfg, inp.faces).added == 0 and Path(cfg.decisions).read_bytes() == before  # idempotent

    assert set(reviewed_faces(cfg, inp).column("face_id").to_pylist()) == kept - set(fps)
    assert set(reviewed_faces(replace(cfg, unreviewed="drop"), inp).column("face_id").to_pylist()) == set(fine)

    stats = run_review(cfg, inp)  # the queue now holds only undecided faces
    # what the stage hands tag, train and release: the same faces, each with the verdict that applied
    passed = read_reviewed(cfg.out.faces)
    verdicts = dict(zip(passed.column("face_id").to_pylist(), passed.column("verdict").to_pylist()))
    assert set(verdicts) == kept - set(fps)
    assert {f for f, v in verdicts.items() if v == "fine"} == set(fine) and passed.column("face_id").to_pylist() == sorted(verdicts)
    assert {q["face_id"] for q in read_queue(Path(cfg.out.queue))} == kept - set(fps) - set(fine)
    saved = json.loads(Path(cfg.out.stats).read_text())
    assert saved["total"] == {"kept": 54, "reviewed": 5, "pending": 49, "false_positive": 3, "fp_rate": 0.6}
    assert sum(d["reviewed"] for d in saved["detectors"].values()) == 5 and saved["downstream"] == 51
    assert any("false positives" in line for line in stats.lines()) and "| **all** | 54 | 5 | 49 | 3 |" in stats.markdown()


GOOD = "a" * 64
OTHER = "b" * 64
MALFORMED = [
    ("id,false_positive\n{a},1\n", "line 1: no face_id column"),
    ("face_id,verdict\n{a},1\n", "line 1: unknown column 'verdict'"),
    ("face_id,false_positive,comment\n{a},1,x\n", "line 1: unknown column 'comment'"),
    ("face_id,note\n{a},x\n", "line 1: missing column 'false_positive'"),
    ("face_id,false_positive\n{a},1\nnot-a-face,1\n", "line 3: face_id 'not-a-face' is not a face id"),
    ("face_id,false_positive\n1.23457E+63,1\n", "turned it into a number"),
    ("face_id,false_positive\n{a},1\n\n{a},0\n", "line 4: face_id " + GOOD + " has false_positive=0 but line 2 says 1"),
    ("face_id,false_positive\n{a},maybe\n", "line 2: false_positive 'maybe' is not a verdict"),
    ("face_id,false_positive\n{a},2\n", "line 2: false_positive '2'"),
    ("face_id,false_positive\n{a},1,,oops\n", "line 2: 4 fields but the header has 2 (value 'oops'"),
    ("face_id,false_positive\n,1\n", "line 2: empty face_id"),
    ("", "line 1: empty"),
    ("face_id,false_positive\n{a},1,\"unterminated\n", "not valid CSV"),
]


def exported(dataset, root: Path):
    """The review stage run once on `dataset`, into root: (its config, its inputs)."""
    cfg, inp = review_config(root), inputs(dataset[0])
    run_review(cfg, inp)
    return cfg, inp


def mark(cfg, verdicts: dict[int, str]) -> list[dict]:
    """The queue with these false_positive cells filled in (by row), saved as a reviewer saves it."""
    queue = read_queue(Path(cfg.out.queue))
    for row, value in verdicts.items():
        queue[row]["false_positive"] = value
    write_queue(Path(cfg.out.queue), queue)
    return queue


@pytest.mark.parametrize("content,message", MALFORMED, ids=[m[1][:30] for m in MALFORMED])
def test_malformed_decisions_stop_everything(dataset, tmp_path, content, message):
    cfg, inp = exported(dataset, tmp_path)  # a previous good export
    Path(cfg.decisions).write_text(content.format(a=GOOD))
    before = snapshot(tmp_path)
    for attempt in (lambda: run_review(cfg, inp), lambda: reviewed_faces(cfg, inp), lambda: merge(cfg, inp.faces)):
        with pytest.raises(ReviewError) as e:
            attempt()
        assert message in str(e.value) and cfg.decisions in str(e.value)
        assert "\n" not in str(e.value)
        assert snapshot(tmp_path) == before


def test_not_utf8_names_line(dataset, tmp_path):
    cfg = review_config(tmp_path)
    Path(cfg.decisions).write_bytes(b"face_id,false_positive,reviewer,note\n" + GOOD.encode() + b",1,J\xe9r\xf4me,\n")
    with pytest.raises(ReviewError, match=r"line 2: byte 0xe9 is not UTF-8"):
        reviewed_faces(cfg, inputs(dataset[0]))


def test_spreadsheet_dialects_accepted(dataset, tmp_path):
    data, rows = dataset
    ids = sorted(kept_ids(rows))
    cfg = review_config(tmp_path)
    # what Excel (German locale) writes: BOM, CRLF, `;`, quoted fields, with a `;` and a newline inside a note
    text = ('"face_id";"false_positive";"reviewer";"note"\r\n'
            f'"{ids[0]}";"1";"Ann";"not a face; a hand"\r\n'
            f'"{ids[1]}";"TRUE";"";"two\r\nlines"\r\n'
            f'{ids[2]};yes;;\r\n{ids[3]};x;;\r\n{ids[4]};No;;\r\n{ids[5]};false;;\r\n{ids[6]};0;;\r\n'
            f'{ids[7].upper()};;;undecided\r\n;;;\r\n')
    Path(cfg.decisions).write_bytes(codecs.BOM_UTF8 + text.encode())
    table, decisions = read_decisions(cfg.decisions)
    assert (table.delimiter, table.newline, table.bom) == (";", "\r\n", True)
    assert {k: d.false_positive for k, d in decisions.items()} == {
        **dict.fromkeys(ids[:4], True), **dict.fromkeys(ids[4:7], False)}
    assert decisions[ids[0]].note == "not a face; a hand" and decisions[ids[1]].note == "two\r\nlines"
    assert decisions[ids[2]].line == 5  # physical lines: the quoted newline counts
    assert set(reviewed_faces(cfg, inputs(data)).column("face_id").to_pylist()) == set(ids) - set(ids[:4])

    # a tab-separated LF file without BOM, too
    Path(cfg.decisions).write_text(f"face_id\tfalse_positive\n{ids[0]}\t1\n")
    assert read_decisions(cfg.decisions)[1][ids[0]].false_positive is True

    # merging into the Excel file appends in its own dialect and keeps every byte that was there
    Path(cfg.decisions).write_bytes(codecs.BOM_UTF8 + text.encode())
    before = Path(cfg.decisions).read_bytes()
    run_review(cfg, inputs(data))
    queue = read_queue(Path(cfg.out.queue))
    queue[0]["false_positive"], queue[0]["note"] = "x", "=1+1"
    write_queue(Path(cfg.out.queue), queue, delimiter=";")
    assert merge(cfg, inputs(data).faces).added == 1
    after = Path(cfg.decisions).read_bytes()
    assert after.startswith(before) and after[len(before):] == f"{queue[0]['face_id']};1;;'=1+1\r\n".encode()


def test_verdict_words():
    for v in ("1", "true", "TRUE", "Yes", "x", " X "):
        assert parse_verdict(v) is True
    for v in ("0", "false", "no", "NO"):
        assert parse_verdict(v) is False
    for v in ("", "  "):
        assert parse_verdict(v) is None
    for v in ("2", "maybe", "-1", "1.0"):
        with pytest.raises(ValueError):
            parse_verdict(v)


def test_csv_injection_escaped(dataset, tmp_path):
    data, rows = dataset
    cfg = review_config(tmp_path)
    evil = ["=HYPERLINK(\"http://evil\",\"x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "'=already"]
    write_manifest(tmp_path / "manifest.parquet", [r["image_id"] for r in rows])  # urls follow row order
    from tasks.artifacts.images import MANIFEST_SCHEMA
    from tasks.fileio import read_parquet, write_parquet

    man = read_parquet(tmp_path / "manifest.parquet", "raw_manifest", 3).to_pylist()
    for i, m in enumerate(man[: len(evil)]):
        m["url"] = evil[i]
    write_parquet(tmp_path / "manifest.parquet", man, MANIFEST_SCHEMA)
    inp = replace(inputs(data), manifest=str(tmp_path / "manifest.parquet"))
    run_review(cfg, inp)
    raw = Path(cfg.out.queue).read_text(encoding="utf-8-sig")
    cells = [c for row in csv.reader(io.StringIO(raw, newline="")) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    for e in evil:
        assert escape_cell(e) in cells
    url_of = {r["image_id"]: u for r, u in zip(rows, evil)}
    queue = read_queue(Path(cfg.out.queue))
    # the pipeline's own reader gets the original back
    from tasks.artifacts.decisions import QUEUE_COLUMNS, read_csv

    table = read_csv(cfg.out.queue, QUEUE_COLUMNS)
    by_id = {r["face_id"]: r for r in rows}
    for _, v in table.rows:
        want = url_of.get(by_id[v["face_id"]]["image_id"])
        if want is not None:
            assert v["url"] == want
    # reviewer and note cells the merge writes are escaped too, and read back unchanged
    queue[1]["false_positive"], queue[1]["reviewer"], queue[1]["note"] = "1", "@bob", "-looks like a hand"
    write_queue(Path(cfg.out.queue), queue)
    merge(cfg, inp.faces)
    assert f"{queue[1]['face_id']},1,'@bob,'-looks like a hand\n" in Path(cfg.decisions).read_text()
    d = read_decisions(cfg.decisions)[1][queue[1]["face_id"]]
    assert (d.reviewer, d.note) == ("@bob", "-looks like a hand")
    # the HTML never embeds a url; page scripts hold them JSON-encoded and links are http(s) only
    assert "HYPERLINK" not in Path(cfg.out.html).read_text()
    assert "/^https?:" in Path(cfg.out.html).read_text()


@pytest.mark.parametrize("value", ["", "'", "''", "'a", "=1", "'=1", "''=1", "-", "@", "a=b", "\t", "x'"])
def test_escape_round_trip(value):
    assert unescape_cell(escape_cell(value)) == value
    assert escape_cell(value)[:1] not in ("=", "+", "-", "@", "\t", "\r")


def test_merge_refuses_conflicts_and_unknown_faces(dataset, tmp_path):
    cfg, inp = exported(dataset, tmp_path)
    queue = mark(cfg, {0: "1"})
    merge(cfg, inp.faces)
    # the reviewer changes their mind in the queue: refused, the recorded decision stands
    queue[0]["false_positive"] = "0"
    queue[1]["false_positive"] = "1"
    write_queue(Path(cfg.out.queue), queue)
    with refused(tmp_path, rf"queue.csv: line 2: face_id {queue[0]['face_id']} has false_positive=0 "
                           r"but .*false_positives.csv line 2 records 1"):
        merge(cfg, inp.faces)
    # a face_id that is not in faces.parquet (mistyped, or the queue is stale)
    queue[0]["false_positive"] = "1"
    queue[2]["face_id"], queue[2]["false_positive"] = "c" * 64, "1"
    write_queue(Path(cfg.out.queue), queue)
    with refused(tmp_path, r"queue.csv: line 4: face_id c{64} is not in .*faces.parquet.*--keep-missing"):
        merge(cfg, inp.faces)
    # the reviewer may keep them explicitly: recorded as orphans, counted, said so, never discarded
    result = merge(cfg, inp.faces, keep_missing=True)
    assert (result.added, result.orphans, result.already) == (2, 1, 1)
    assert "1 of them name faces not in the faces dataset: kept as orphans" in result.message()
    assert set(read_decisions(cfg.decisions)[1]) == {queue[0]["face_id"], queue[1]["face_id"], "c" * 64}
    stats = run_review(cfg, inp)
    assert [o["face_id"] for o in stats.orphaned] == ["c" * 64]  # reported, and applies again if the face returns
    assert merge(cfg, inp.faces, keep_missing=True).added == 0  # idempotent


def test_stage_refuses_to_overwrite_unmerged_verdicts(dataset, tmp_path):
    cfg, inp = exported(dataset, tmp_path)
    queue = mark(cfg, {5: "x"})
    with refused(tmp_path, r"queue.csv: 1 verdicts \(first at line 7\) are not in .* merge"):
        run_review(cfg, inp)
    merge(cfg, inp.faces)
    run_review(cfg, inp)
    assert queue[5]["face_id"] not in {q["face_id"] for q in read_queue(Path(cfg.out.queue))}


def test_decisions_survive_faces_that_vanish(dataset, tmp_path):
    """A decision on a face that no longer exists is kept in the CSV and reported, not dropped."""
    data, rows = dataset
    kept = sorted(kept_ids(rows))
    dropped = next(r["face_id"] for r in rows if r["drop_reason"])
    cfg = review_config(tmp_path)
    Path(cfg.decisions).write_text(f"face_id,false_positive,reviewer,note\n{GOOD},1,,gone\n{kept[0]},1,,\n{dropped},0,,\n")
    before = Path(cfg.decisions).read_bytes()
    stats = run_review(cfg, inputs(data))
    assert Path(cfg.decisions).read_bytes() == before
    assert stats.orphaned == [{"face_id": GOOD, "false_positive": 1, "line": 2}] and stats.on_dropped == 1
    assert json.loads(Path(cfg.out.stats).read_text())["orphaned_decisions"] == 1
    assert any("no longer exist" in line for line in stats.lines())
    assert kept[0] not in set(reviewed_faces(cfg, inputs(data)).column("face_id").to_pylist())


def test_faces_without_crop_and_empty_queue(tmp_path):
    rows = build_faces_tiny(tmp_path, 3)
    rows[1]["shard"] = None
    write_faces(tmp_path / "faces.parquet", rows)
    cfg = review_config(tmp_path, page_size=2)
    inp = replace(inputs(tmp_path), manifest=None)
    assert run_review(cfg, inp).pages == 2  # no manifest, a face without crop: still exported
    queue = read_queue(Path(cfg.out.queue))
    for q in queue:
        q["false_positive"] = "0"
    write_queue(Path(cfg.out.queue), queue)
    merge(cfg, inp.faces)
    stats = run_review(cfg, inp)
    assert (stats.queued, stats.pages) == (0, 0) and read_queue(Path(cfg.out.queue)) == []
    assert [p.name for p in Path(cfg.out.thumbs).iterdir()] == [stats.version]
    assert [p.name for p in (Path(cfg.out.thumbs) / stats.version).iterdir()] == ["index.js"]
    assert "Nothing to review" in Path(cfg.out.html).read_text()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o027, 0o750)], ids=["022", "027"])
def test_thumbnail_pages_get_the_mode_a_plain_mkdir_would_have(tmp_path, umask, mode):
    build_faces_tiny(tmp_path, 3)
    cfg = review_config(tmp_path)
    old = os.umask(umask)
    try:
        stats = run_review(cfg, replace(inputs(tmp_path), manifest=None))
    finally:
        os.umask(old)
    assert oct(os.stat(Path(cfg.out.thumbs) / stats.version).st_mode & 0o777) == oct(mode)


def build_faces_tiny(root: Path, n: int) -> list[dict]:
    return build_faces(root, [(f"img{i}", tiny_png(i)) for i in range(n)])


def test_config_validation():
    assert build(ReviewConfig, {}, "review") == ReviewConfig()
    for data, key in [({"unreviewed": "maybe"}, "review.unreviewed"), ({"thumb_size": 4}, "review.thumb_size"),
                      ({"page_size": 0}, "review.page_size"), ({"out": {"queue": 1}}, "review.out.queue"),
                      ({"decisions": "review/fp.xlsx"}, "review.decisions"), ({"colour": 1}, "review.colour")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            build(ReviewConfig, data, "review")


def test_params_yaml_review_section():
    from tasks.params.all import load_params

    cfg = load_params(ROOT / "params.yaml").review
    assert cfg == ReviewConfig()  # params.yaml spells out the defaults
    assert (ROOT / cfg.decisions).read_text() == "face_id,false_positive,reviewer,note\n"


def test_cli_stage_and_merge(dataset, tmp_path, capsys):
    """`python -m tasks.review` (the DVC stage command), then `merge` as a reviewer runs it."""
    from tasks.review.cli import main

    data, rows = dataset
    cfg = review_config(tmp_path)
    inp = inputs(data)
    ppath = params_file(tmp_path, cfg, inp)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "tasks.review", "--params", str(ppath), "--faces", inp.faces,
                        "--crops", inp.crops, "--manifest", inp.manifest], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "all detectors: 54 kept faces, 0 reviewed, 54 pending" in p.stdout + p.stderr
    assert json.loads(Path(cfg.out.stats).read_text())["queued"] == 54

    queue = read_queue(Path(cfg.out.queue))
    queue[0]["false_positive"] = "1"
    write_queue(Path(cfg.out.queue), queue)
    assert main(["merge", "--params", str(ppath), "--reviewer", "cli", "--faces", inp.faces]) == 0
    assert "merged 1 verdicts (1 false positives)" in capsys.readouterr().out
    assert read_decisions(cfg.decisions)[1][queue[0]["face_id"]].reviewer == "cli"

    # a bad file: one line on stderr, exit 1, and the reviewer's command never imports Prefect
    (tmp_path / "bad.csv").write_text("face_id,false_positive\nzzz,1\n")
    merge_cmd = ["-m", "tasks.review", "merge", "--params", str(ppath), "--from", str(tmp_path / "bad.csv"),
                 "--faces", inp.faces]
    p = subprocess.run([sys.executable, *merge_cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("error: ") and "bad.csv: line 2: face_id 'zzz' is not a face id" in p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    timed = subprocess.run([sys.executable, "-X", "importtime", *merge_cmd], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60).stderr  # one line per module imported
    imported = {line.rsplit("|", 1)[-1].strip() for line in timed.splitlines() if line.startswith("import time:")}
    assert "tasks.review.merge" in imported and not {m for m in imported if m.split(".")[0] == "prefect"}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_contact_sheet_script_is_valid_javascript(tmp_path):
    """The app is a real file (tasks/review/sheet/queue.js), inlined as it is into queue.html."""
    from tasks.review.html import asset, render_html

    source = ROOT / "tasks/review/sheet/queue.js"
    p = subprocess.run(["node", "--check", str(source)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    page = render_html(total=1200, pages=3, per_file=8, size=96, thumbs_dir="thumbs/0123456789ab", version="0123456789ab",
                       store="review/<b>&'x.csv")
    scripts = page.split("<script>")[1:]
    assert scripts[1].split("</script>")[0].strip() == asset("queue.js").strip() == source.read_text().strip()
    assert "const META = " in scripts[0] and "<b>" not in page  # META is JSON escaped for a script element
    (tmp_path / "sheet.js").write_text("".join(s.split("</script>")[0] for s in scripts))
    p = subprocess.run(["node", "--check", str(tmp_path / "sheet.js")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert asset("queue.css") in page


def test_merge_names_the_pipeline_run_waiting_for_review(dataset, tmp_path, monkeypatch):
    """flows.pipeline leaves reports/review_waiting.json while a run waits after review; merge names that run."""
    data, _ = dataset
    monkeypatch.chdir(tmp_path)
    cfg, inp = review_config(tmp_path, page_size=20, columns=6, thumb_size=48), inputs(data)
    run_review(cfg, inp)
    queue = read_queue(Path(cfg.out.queue))
    queue[0]["false_positive"] = "1"
    write_queue(Path(cfg.out.queue), queue)
    text = merge(cfg, inp.faces).message()
    assert "then run `dvc repro`, or resume a pipeline run waiting for review" in text and "flow run " not in text, text

    run_id = "0b5e8a2c-8a47-4fb4-9d34-1bd1f0a5b000"
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "review_waiting.json").write_text(json.dumps(
        {"run_id": run_id, "run_name": "metal-beetle", "since": "2026-12-03T06:40:55+00:00"}))
    queue[1]["false_positive"] = "1"
    write_queue(Path(cfg.out.queue), queue)
    text = merge(cfg, inp.faces).message()
    assert f"then resume flow run metal-beetle ({run_id}), waiting for review here since 2026-12-03T06:40:55" in text
    assert f"`python -m flows.pipeline resume {run_id}`" in text, text

    # a damaged or hand-edited file names no run: ignored (a warning), merge says how to find waiting runs
    for k, bad in enumerate(('{"run_name": "metal-beetle"}', '["x"]', '{"run_id": 7}', "{not json")):
        (tmp_path / "reports" / "review_waiting.json").write_text(bad)
        queue[2 + k]["false_positive"] = "1"
        write_queue(Path(cfg.out.queue), queue)
        text = merge(cfg, inp.faces).message()
        assert "resume a pipeline run waiting for review" in text and "flow run " not in text, (bad, text)
