"""queue.html in real headless Chromium (Debian's, driven by playwright-core), from file:// as a
reviewer opens it: mark a page checked and a face as a false positive, regenerate the queue (a
colleague merged verdicts, so every page now holds other faces), reload. The page must not show
a page as checked that holds faces nobody looked at, must keep the marks that still apply, set
aside visibly the ones that no longer do, and download only what the reviewer decided."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.review.run import run_review
from tests.support.review import build_faces, inputs, png_bytes, read_queue, review_config, thumbnail_link
from tests.support.web import BrowserUnavailable, ensure_browser, ensure_node_modules

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "support" / "review_sheet_driver.mjs"
LAYOUT = {"page_size": 4, "columns": 4, "thumb_size": 48}

REGENERATE = ROOT / "tests" / "support" / "regenerate_queue.py"  # a colleague decides two faces, reruns review

CELLS = ("Array.from(document.querySelectorAll('#grid .cell')).map(c => ({id: c.querySelector('.id').textContent, "
         "fp: c.classList.contains('fp'), fine: c.classList.contains('fine')}))")


@pytest.fixture(scope="module")
def chromium():
    try:
        ensure_node_modules()
        return ensure_browser()
    except (BrowserUnavailable, RuntimeError) as e:
        pytest.skip(str(e))


SAVED = {"wait": "document.body.dataset.saved === 'saved'"}  # the header says "saved": the reviewer may leave
STORED = "storedMarks()"  # the sheet's own read of what IndexedDB holds


def first_id_is(fid: str) -> dict:
    return {"wait": f"(document.querySelector('#grid .cell .id') || {{}}).textContent === '{fid}'"}


def drive(steps: list[dict]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["node", str(DRIVER), json.dumps(steps)], capture_output=True, text=True, timeout=300, env=env)
    try:
        result = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"the driver printed no result (rc {r.returncode}): {r.stderr[-2000:]}") from None
    assert result["ok"], result.get("error")
    assert result["errors"] == [] and result["console"] == [], result
    return result


def verdicts(text: str) -> dict[str, str]:
    lines = text.strip().splitlines()
    assert lines[0] == "face_id,false_positive"
    return dict(line.split(",") for line in lines[1:])


def test_marks_survive_a_regenerated_queue_and_never_mark_unseen_faces(chromium, tmp_path, shared):
    files = sorted((shared / "data/faces").glob("dlgan_*.jpg"))[:12]
    build_faces(tmp_path, [(f.name, png_bytes(f)) for f in files])
    cfg = review_config(tmp_path, **LAYOUT)
    run_review(cfg, inputs(tmp_path))
    q = [row["face_id"] for row in read_queue(Path(cfg.out.queue))]
    assert len(q) == 12
    url = Path(cfg.out.html).resolve().as_uri() + "#p=1"

    r = drive([
        {"goto": url}, first_id_is(q[0]),
        {"check": "#done"},  # page 1 checked: q0..q3 are fine
        {"click": "#next"}, first_id_is(q[4]),
        {"click": "#grid .cell:nth-child(1) .thumb"},  # q4 is a false positive
        {"eval": CELLS}, SAVED,
        # a colleague merges q0 and q1 as fine, and the queue is regenerated: pages shift by two
        {"exec": [sys.executable, str(REGENERATE), str(tmp_path), q[0], q[1]]},
        {"goto": "about:blank"}, {"goto": url}, first_id_is(q[2]),  # the reviewer reopens the sheet
        {"eval": CELLS}, {"eval": "document.getElementById('done').checked"},
        {"eval": "document.getElementById('notice').hidden ? '' : document.getElementById('notice-text').textContent"},
        {"download": "#save"},
        {"download": "#notice-save"},
        {"check": "#done"},  # now the reviewer checks the new page 1, with q5 on it
        {"download": "#save"},
        {"click": "#notice-close"}, SAVED, {"reload": True}, first_id_is(q[2]),
        {"eval": "document.getElementById('notice').hidden"},
    ])
    before, after, checked, notice, saved, stale, saved_checked, closed = r["results"]
    assert [c["fp"] for c in before] == [True, False, False, False]
    assert [c["id"] for c in after] == q[2:6]  # page 1 of the new queue
    assert not checked, "page 1 holds q5, which nobody looked at, yet shows as checked"
    assert [(c["fp"], c["fine"]) for c in after] == [(False, True), (False, True), (True, False), (False, False)]
    assert "2 marks no longer apply" in notice
    assert verdicts(saved) == {q[2]: "0", q[3]: "0", q[4]: "1"}  # q5 is not recorded as fine
    assert verdicts(stale) == {q[0]: "0", q[1]: "0"}  # set aside, still downloadable
    assert verdicts(saved_checked) == {q[2]: "0", q[3]: "0", q[4]: "1", q[5]: "0"}
    assert closed is True
    version = json.loads(Path(cfg.out.stats).read_text())["queue_version"]
    assert thumbnail_link(read_queue(Path(cfg.out.queue))[0]["thumbnail"])[1] == version


SPRITE = ("(async () => { const u = getComputedStyle(document.querySelector('#grid .thumb')).backgroundImage; "
          "const i = new Image(); i.src = u.slice(5, -2); await i.decode(); return [u.slice(5, 10), i.naturalWidth, i.naturalHeight]; })()")
TARGET = "Array.from(document.querySelectorAll('#grid .cell.target .id')).map(e => e.textContent)"
NOTICE = "document.getElementById('notice').hidden ? '' : document.getElementById('notice-text').textContent"
LINK = "document.getElementById('link').hidden ? '' : document.getElementById('link').textContent"


def test_a_queue_csv_link_opens_its_page_and_outlines_its_face(chromium, tmp_path, shared):
    """queue.csv's `thumbnail` opens the sheet at its page (in another part file than page 1) with
    its cell outlined; after the queue is regenerated, the old link says so instead of outlining
    whatever face now sits in that cell, on a line of its own: the notice of marks set aside (and
    its download button) stays as it was."""
    files = sorted((shared / "data/faces").glob("dlgan_*.jpg"))[:12]
    build_faces(tmp_path, [(f.name, png_bytes(f)) for f in files])
    cfg = review_config(tmp_path, **LAYOUT, pages_per_file=2)  # pages 1-2 in part 1, page 3 in part 2
    run_review(cfg, inputs(tmp_path))
    rows = read_queue(Path(cfg.out.queue))
    q = [row["face_id"] for row in rows]
    sheet, version, page, cell = thumbnail_link(rows[9]["thumbnail"])
    assert (page, cell) == (3, 2)
    link = (Path(cfg.out.queue).parent / sheet).resolve().as_uri() + "#" + rows[9]["thumbnail"].split("#")[1]

    r = drive([
        {"goto": link}, first_id_is(q[8]),
        {"eval": TARGET}, {"eval": SPRITE}, {"eval": "(" + NOTICE + ") + '|' + (" + LINK + ")"},
        {"click": "#grid .cell:nth-child(1) .thumb"},  # q8 marked a false positive
        {"click": "#prev"}, first_id_is(q[4]),  # back into part 1
        {"eval": TARGET}, {"eval": SPRITE}, SAVED,
        # a colleague decides q8: the reviewer's mark on it no longer applies (set aside)
        {"exec": [sys.executable, str(REGENERATE), str(tmp_path), q[8]]},
        {"goto": "about:blank"}, {"goto": link}, first_id_is(q[9]),  # the old link, the new queue's page 3
        {"eval": TARGET}, {"eval": NOTICE}, {"eval": LINK},
        {"eval": "document.getElementById('notice-save').hidden"},
    ])
    target, sprite, messages, target_p2, sprite_p2, target_stale, notice_stale, link_stale, save_hidden = r["results"]
    assert target == [q[9]] and messages == "|"
    assert sprite == ["blob:", 4 * 48, 48] and sprite_p2 == ["blob:", 4 * 48, 48]  # the page's sprite, decoded
    assert target_p2 == []
    assert target_stale == [] and f"from queue version {version}" in link_stale, link_stale
    assert "1 mark no longer applies" in notice_stale and save_hidden is False, notice_stale


def test_a_mark_is_saved_before_the_sheet_says_so_and_an_older_sheets_marks_move(chromium, tmp_path, shared):
    """The marks live in IndexedDB, one transaction a change: the header says "saving…" until it
    completes, then "saved", and a reload at once after that keeps the mark (with localStorage,
    which has no completion signal, a reload a few ms after the click lost it at 64 k faces).
    Marks an older sheet kept in localStorage are read and moved. Without IndexedDB, the sheet
    says the marks are not saved instead of pretending."""
    files = sorted((shared / "data/faces").glob("dlgan_*.jpg"))[:8]
    build_faces(tmp_path, [(f.name, png_bytes(f)) for f in files])
    cfg = review_config(tmp_path, **LAYOUT)
    run_review(cfg, inputs(tmp_path))
    q = [row["face_id"] for row in read_queue(Path(cfg.out.queue))]
    url = Path(cfg.out.html).resolve().as_uri()
    version = json.loads(Path(cfg.out.stats).read_text())["queue_version"]
    key = "moeflow-review:" + cfg.decisions
    older = {"format": 2, "version": version, "fp": {q[1]: 1}, "fine": {}, "stale": {"fp": {}, "fine": {}}}
    seed = (f"if (!sessionStorage.seeded) {{ localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(older))}); "
            "sessionStorage.seeded = '1'; }")
    r = drive([
        {"init": seed}, {"goto": url}, first_id_is(q[0]), SAVED,
        {"eval": CELLS}, {"eval": f"localStorage.getItem({json.dumps(key)})"},  # moved: gone from localStorage
        {"click": "#grid .cell:nth-child(3) .thumb"},
        {"eval": "document.body.dataset.saved"}, SAVED, {"eval": STORED},
        {"reload": True}, first_id_is(q[0]), SAVED, {"eval": CELLS},
    ])
    moved, legacy_left, saving, stored, kept = r["results"]
    assert [c["fp"] for c in moved] == [False, True, False, False]
    assert legacy_left is None
    assert saving in ("saving\u2026", "saved"), saving
    assert stored["fp"] == {q[1]: 1, q[2]: 1} and stored["version"] == version
    assert [c["fp"] for c in kept] == [False, True, True, False]

    r = drive([
        {"init": "delete window.indexedDB;"}, {"goto": url}, first_id_is(q[0]),
        {"click": "#grid .cell:nth-child(1) .thumb"},
        {"eval": "[document.body.dataset.saved, document.getElementById('saved').textContent, "
                 "document.getElementById('notice').hidden, document.getElementById('notice-text').textContent]"},
    ])
    [(flag, header, hidden, text)] = r["results"]
    assert flag == header == "not saved" and hidden is False
    assert text.startswith("Your marks cannot be saved in this browser (") and "download them" in text, text

    r = drive([  # a storage that never answers: the sheet opens without it after 5 s, and says so
        {"init": "indexedDB.open = () => ({});"}, {"goto": url}, first_id_is(q[0]),
        {"eval": "[document.body.dataset.saved, document.getElementById('notice-text').textContent, "
                 "document.querySelectorAll('#grid .cell').length]"},
    ])
    [(flag, text, cells)] = r["results"]
    assert flag == "not saved" and cells == 4
    assert "the browser's storage did not answer in 5 s" in text, text


def test_two_tabs_of_the_sheet_never_write_over_each_others_marks(chromium, tmp_path, shared):
    """A queue.csv link opens the sheet in a second tab. Each tab's change is written into what is
    stored, not its whole copy over it (before, the first tab's next click erased the second's
    mark); the other tab shows it, and "Download verdicts" in either holds both tabs' marks."""
    files = sorted((shared / "data/faces").glob("dlgan_*.jpg"))[:8]
    build_faces(tmp_path, [(f.name, png_bytes(f)) for f in files])
    cfg = review_config(tmp_path, **LAYOUT)
    run_review(cfg, inputs(tmp_path))
    rows = read_queue(Path(cfg.out.queue))
    q = [row["face_id"] for row in rows]
    url = Path(cfg.out.html).resolve().as_uri()
    link = (Path(cfg.out.queue).parent / thumbnail_link(rows[1]["thumbnail"])[0]).resolve().as_uri() + "#" + \
        rows[1]["thumbnail"].split("#")[1]
    fp = "document.querySelector('#grid .cell:nth-child({})').classList.contains('fp')"
    r = drive([
        {"goto": url}, first_id_is(q[0]),
        {"click": "#grid .cell:nth-child(1) .thumb"}, SAVED,  # tab 0: q0
        {"tab": link}, first_id_is(q[0]), SAVED,
        {"eval": CELLS},  # tab 1 opens with q0 marked
        {"click": "#grid .cell:nth-child(2) .thumb"}, SAVED,  # tab 1: q1
        {"switch": 0}, {"wait": fp.format(2)},  # tab 0 shows q1, told by tab 1
        {"click": "#grid .cell:nth-child(3) .thumb"}, SAVED,  # tab 0: q2
        {"download": "#save"},
        {"switch": 1}, {"wait": fp.format(3)}, {"download": "#save"},
        {"reload": True}, first_id_is(q[0]), SAVED, {"eval": CELLS},
    ])
    opened, first, second, reloaded = r["results"]
    assert [c["fp"] for c in opened] == [True, False, False, False]
    assert verdicts(first) == verdicts(second) == {q[0]: "1", q[1]: "1", q[2]: "1"}
    assert [c["fp"] for c in reloaded] == [True, True, True, False]
