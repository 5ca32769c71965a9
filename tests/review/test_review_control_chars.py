"""Control characters in the CSV files people edit (issue 21, item 15): review/false_positives.csv,
the queue and optout.csv refuse NUL and the other C0/C1 codes with one line naming the file, the
line and the column, and change nothing. A tab or a line break inside a quoted cell is what a
spreadsheet writes for a multi-line note: accepted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.artifacts.decisions import QUEUE_COLUMNS, read_csv, read_decisions
from tasks.artifacts.images import MANIFEST_SCHEMA
from tasks.artifacts.optout import read_requests
from tasks.errors import OptoutError
from tasks.fileio import read_parquet, write_parquet
from tasks.review.merge import merge
from tasks.review.run import run_review
from tests.conftest import ROOT
from tests.support.review import (build_faces, inputs, params_file, read_queue, refused, review_config,
                                  reviewed_faces, snapshot, tiny_png, write_manifest, write_queue)
from tests.support.scrape import OPTOUT_HEADER

CONTROLS = ["\x00", "\x01", "\x1b", "\x7f", "\x85"]  # NUL, SOH, ESC, DEL, NEL (C1)
HEADER = "face_id,false_positive,reviewer,note\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    rows = build_faces(root, [(f"img{i}", tiny_png(i)) for i in range(6)])
    write_manifest(root / "manifest.parquet", [r["image_id"] for r in rows])
    return root


def kept(data: Path) -> list[str]:
    return sorted(read_parquet(data / "faces.parquet", "faces", 1).column("face_id").to_pylist())


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_a_control_character_in_the_decisions_is_refused_naming_line_and_column(data, tmp_path, char):
    ids = kept(data)
    cfg, inp = review_config(tmp_path), inputs(data)
    run_review(cfg, inp)  # an earlier good run: its queue and thumbnails must survive the bad one
    Path(cfg.decisions).write_text(f"{HEADER}{ids[0]},1,ann,a hand\n{ids[1]},0,bob,fine{char}really\n",
                                   encoding="utf-8")
    message = (rf"false_positives.csv: line 3: note: control character U\+{ord(char):04X} in "
               + re.escape(repr(f"fine{char}really")))
    for attempt in (lambda: run_review(cfg, inp), lambda: reviewed_faces(cfg, inp), lambda: merge(cfg, inp.faces)):
        with refused(tmp_path, message):
            attempt()


def test_a_control_character_in_the_queue_stops_merge_and_the_stage(data, tmp_path):
    cfg, inp = review_config(tmp_path), inputs(data)
    run_review(cfg, inp)
    queue = read_queue(Path(cfg.out.queue))
    queue[0]["false_positive"], queue[1]["false_positive"], queue[1]["reviewer"] = "1", "0", "a\x00nn"
    write_queue(Path(cfg.out.queue), queue)
    with refused(tmp_path, r"queue.csv: line 3: reviewer: control character U\+0000 in 'a\\x00nn'"):
        merge(cfg, inp.faces)
    with refused(tmp_path, r"queue.csv: line 3: reviewer: control character U\+0000"):
        run_review(cfg, inp)
    with refused(tmp_path, r"--reviewer: control character U\+001B"):
        merge(cfg, inp.faces, reviewer="\x1b[31mann")


def test_the_merge_command_says_it_in_one_line(data, tmp_path):
    cfg, inp = review_config(tmp_path), inputs(data)
    run_review(cfg, inp)
    ppath = params_file(tmp_path, cfg, inp)
    bad = tmp_path / "verdicts.csv"
    bad.write_bytes(f"face_id,false_positive\n{kept(data)[0]},1\x00\n".encode())
    before = snapshot(tmp_path)
    p = subprocess.run([sys.executable, "-m", "tasks.review", "merge", "--params", str(ppath), "--from", str(bad),
                        "--faces", inp.faces], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.splitlines() == [
        f"error: {bad}: line 2: false_positive: control character U+0000 in '1\\x00' (a cell holds printable text: "
        "delete the character)"]
    assert snapshot(tmp_path) == before


def test_tabs_and_line_breaks_inside_quoted_cells_are_text(data, tmp_path):
    ids = kept(data)
    cfg = review_config(tmp_path)
    Path(cfg.decisions).write_text(f'{HEADER}{ids[0]},1,ann,"a\thand"\r\n{ids[1]},0,bob,"two\nlines\r\nthree"\n',
                                   encoding="utf-8", newline="")
    decisions = read_decisions(cfg.decisions)[1]
    assert decisions[ids[0]].note == "a\thand" and decisions[ids[1]].note == "two\nlines\r\nthree"


def test_a_control_character_in_optout_csv_is_one_problem_line(tmp_path):
    f = tmp_path / "optout.csv"
    f.write_text(OPTOUT_HEADER + "2026-11-30,e-mail,artist_a,,,,,,\n2026-11-30,e-mail,artist\x00b,,,,,,\n"
                 "2026-11-30,e-mail,artist_c,,,,,,from\x07support\n", encoding="utf-8")
    with pytest.raises(OptoutError) as e:
        read_requests(f)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{f}: 2 problems, nothing changed (fix each line below, then run again):"
    assert lines[1].startswith(f"{f}: line 3: artist: control character U+0000 in 'artist\\x00b'")
    assert lines[2].startswith(f"{f}: line 4: note: control character U+0007 in 'from\\x07support'")


def test_a_source_url_with_a_control_character_is_percent_encoded_in_the_queue(data, tmp_path):
    """The queue is the pipeline's own writing, read back as a people-edited CSV: a url a site
    served with a control character is written percent-encoded, so the next run can read it."""
    man = read_parquet(data / "manifest.parquet", "raw_manifest", 3).to_pylist()
    man[0]["url"] = "https://example.org/a\x00b\x85.png"
    write_parquet(tmp_path / "manifest.parquet", man, MANIFEST_SCHEMA)
    cfg, inp = review_config(tmp_path), replace(inputs(data), manifest=str(tmp_path / "manifest.parquet"))
    run_review(cfg, inp)
    urls = {v["url"] for _, v in read_csv(cfg.out.queue, QUEUE_COLUMNS).rows}
    assert "https://example.org/a%00b%C2%85.png" in urls
    run_review(cfg, inp)  # reads its own queue back
