"""optout.csv: strict validation (every bad line reported, nothing changed), matching, and the
scrape stage honouring it against the fake booru: kept images leave the store and the manifest,
matching posts are never downloaded again, the same bytes from another post are refused, a
withdrawn request lets them back in, and every removal is in the audit log."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import pytest
import yaml

from tasks.artifacts.optout import Subject, read_requests
from tasks.errors import OptoutError
from tasks.scrape.run import scrape
from tests.conftest import ROOT
from tests.support.fakebooru import REAL, FakeBooru
from tests.support.scrape import OPTOUT_HEADER, manifest, rejected, scrape_cfg, stored

NAMES = sorted(p.name for p in REAL.iterdir())[:6]
SHA = "ab" * 32
TODAY = datetime.date(2026, 12, 1)


def write(path, *rows, header=OPTOUT_HEADER):
    path.write_text(header + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_malformed_optout_csv_is_refused_line_by_line(tmp_path):
    f = write(tmp_path / "optout.csv",
              "2026-11-30,the artist's e-mail,artist_b,,,,,,",  # fine
              "2026/11/30,e-mail,artist_c,,,,,,",
              "2026-02-30,e-mail,artist_d,,,,,,",
              "2999-01-01,e-mail,artist_e,,,,,,",
              "2026-11-30,,artist_f,,,,,,",
              "2026-11-30,notice,,,,pixiv,123,,",
              "2026-11-30,notice,,,,,123,,",
              "2026-11-30,notice,artist_g,some_tag,,,,,",
              "2026-11-30,notice,,,,,,1.23E+63,",
              "2026-11-30,notice,,,file:///home/me/a.png,,,,",
              "2026-11-30,notice,,,,,,,",
              "2026-11-30,notice,artist_h,,,,,,,stray",
              "2026-11-30,notice,,,,danbooru,,,")
    with pytest.raises(OptoutError) as e:
        read_requests(f, today=TODAY)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{f}: 12 problems, nothing changed (fix each line below, then run again):"
    expect = {3: "'2026/11/30' is not a date", 4: "'2026-02-30' is not a date of the calendar",
              5: "'2999-01-01' is in the future", 6: "reason is blank", 7: "source 'pixiv' is not a source",
              8: "post_id '123' without a source", 9: "2 requests in one row (artist 'artist_g', tag 'some_tag')",
              10: "the spreadsheet turned it into a number", 11: "a folder import's file: URL",
              12: "nothing to match", 13: "'stray'", 14: "source 'danbooru' without a post_id"}
    assert len(lines) == 1 + len(expect)
    for line, (n, text) in zip(lines[1:], sorted(expect.items())):
        assert line.startswith(f"{f}: line {n}: ") and text in line, (n, line)


@pytest.mark.parametrize("header, text, message", [
    ("date,reason,artist,who\n", "", "unknown column 'who'"),
    ("reason,artist\n", "", "no date column"),
    ("date,artist\n", "", "missing column 'reason'"),
    ("date,reason,note\n", "", "no column to match by"),
    (OPTOUT_HEADER, "2026-11-30,caf\xe9,artist,,,,,,\n", "is not UTF-8"),
])
def test_a_bad_header_or_encoding_is_one_line(tmp_path, header, text, message):
    f = tmp_path / "optout.csv"
    data = (header + text).encode("utf-8")
    f.write_bytes(data.replace("\xe9".encode("utf-8"), b"\xe9"))
    with pytest.raises(OptoutError, match=message):
        read_requests(f, today=TODAY)


def test_a_missing_optout_csv_is_an_error_not_an_empty_list(tmp_path):
    with pytest.raises(OptoutError, match="file not found; it is git-tracked"):
        read_requests(tmp_path / "optout.csv")


def test_what_a_row_matches(tmp_path):
    f = write(tmp_path / "optout.csv",
              "2026-11-01,e-mail,Some Artist,,,,,,",
              "2026-11-02,e-mail,,Do_Not_Train,,,,,",
              "2026-11-03,e-mail,,,http://Danbooru.donmai.us:443/posts/123/?q=1girl#c,,,,",
              "2026-11-04,e-mail,,,https://gelbooru.com/index.php?id=7&page=post&s=view,,,,",
              "2026-11-05,e-mail,,,,gelbooru,99,,",
              f"2026-11-06,e-mail,,,,,,{SHA.upper()},",
              "2026-11-07,later mail,some_artist,,,,,,")
    r = read_requests(f, today=TODAY)
    line = lambda s: (m := r.match(s)) and m.line  # noqa: E731
    assert line(Subject(artist="some_artist other_artist")) == 2  # the first row wins
    assert line(Subject(artist="nobody")) is None
    assert line(Subject(tags=("1girl", "do_not_train"))) == 3
    assert line(Subject(page_url="https://danbooru.donmai.us/posts/123")) == 4  # http = https, no query, slash
    assert line(Subject(page_url="https://danbooru.donmai.us/posts/1234")) is None
    assert line(Subject(page_url="https://gelbooru.com/index.php?page=post&s=view&id=7")) == 5  # query in any order
    assert line(Subject(page_url="https://gelbooru.com/index.php?page=post&s=view&id=8")) is None
    assert line(Subject(source="gelbooru", post_id="99")) == 6
    assert line(Subject(source="danbooru", post_id="99")) is None
    assert line(Subject(image_id=SHA)) == 7
    assert r.match(Subject(artist="x", tags=("1girl",), url="https://a.example/x.png", source="danbooru",
                           post_id="1", image_id="cd" * 32)) is None


def _booru(srv, artists):
    """One post per real image, with the given artists in turn."""
    for i, name in enumerate(NAMES):
        srv.add_real_posts([name], start_id=100 - i, tag_string_artist=artists[i % len(artists)],
                           tag_string=f"1girl pic{i}")
    return {p["id"]: p for p in srv.posts}


def file_requests(srv, names):
    return [p for _, p, _ in srv.log if p.rsplit("/", 1)[-1] in names]


def test_an_opt_out_removes_kept_images_and_they_are_never_fetched_again(tmp_path):
    with FakeBooru() as srv:
        posts = _booru(srv, ["artist_a", "artist_b"])
        cfg = scrape_cfg(tmp_path, srv.url)
        scrape(cfg, progress=False)
        before = {r["post_id"]: r for r in manifest(cfg)}
        assert len(before) == len(NAMES)
        b_files = {p["file"].rsplit("/", 1)[1] for p in posts.values() if p["tag_string_artist"] == "artist_b"}
        b_rows = [r for r in before.values() if r["artist"] == "artist_b"]
        write(tmp_path / "optout.csv", "2026-11-30,the artist's e-mail,artist_b,,,,,,")
        n_log = len(srv.log)
        s = scrape(cfg, progress=False)
        assert s.removed == len(b_rows) == 3 and s.skipped["optout"] == 3
        assert not [p for _, p, _ in srv.log[n_log:] if p.rsplit("/", 1)[-1] in b_files]  # never downloaded
        after = {r["post_id"]: r for r in manifest(cfg)}
        assert set(after) == {k for k, r in before.items() if r["artist"] == "artist_a"}
        assert not {r["image_id"] for r in b_rows} & set(stored(tmp_path / "images"))  # the raw bytes are gone
        assert all(rejected(cfg)[r["post_id"]] == "optout" for r in b_rows)
        log = [json.loads(x) for x in (tmp_path / "optout_log.jsonl").read_text().splitlines()]
        assert sorted(e["image_id"] for e in log) == sorted(r["image_id"] for r in b_rows)
        e = log[0]
        assert e["action"] == "removed" and e["request"]["line"] == 2 and e["request"]["kind"] == "artist"
        assert e["request"]["value"] == "artist_b" and e["post"]["artist"] == "artist_b" and e["at"]
        assert e["previous"] is None and "no dvc.lock names this image store" in e["note"]

        srv.log.clear()
        s = scrape(cfg, progress=False)  # a third run: still nothing of theirs is asked for
        assert s.removed == 0 and not file_requests(srv, b_files)
        assert len((tmp_path / "optout_log.jsonl").read_text().splitlines()) == 3  # nothing new to log

        write(tmp_path / "optout.csv")  # the request is withdrawn: they come back
        s = scrape(cfg, progress=False)
        assert s.kept_new == 3 and {r["post_id"] for r in manifest(cfg)} == set(before)
        assert set(file_requests(srv, b_files)) == {f"/data/{n}" for n in b_files}


def test_the_same_bytes_from_another_post_are_not_kept(tmp_path):
    """Removed under artist_b's request, the picture comes back as someone else's post: refused."""
    with FakeBooru() as srv:
        posts = _booru(srv, ["artist_a", "artist_b"])
        cfg = scrape_cfg(tmp_path, srv.url)
        scrape(cfg, progress=False)
        write(tmp_path / "optout.csv", "2026-11-30,e-mail,artist_b,,,,,,")
        scrape(cfg, progress=False)
        theirs = next(p for p in posts.values() if p["tag_string_artist"] == "artist_b")
        srv.alias("repost.png", theirs["file"].rsplit("/", 1)[1])  # the same bytes, reposted
        srv.posts.append({"id": 10, "file": "data/repost.png", "rating": "g", "tag_string": "1girl",
                          "tag_string_artist": "reposter"})
        s = scrape(cfg, progress=False)
    assert "10" not in {r["post_id"] for r in manifest(cfg)}
    assert rejected(cfg)["10"] == "optout" and s.kept_new == 0 and s.skipped["optout"] == 4


def test_an_image_id_row_refuses_those_bytes_from_any_post(tmp_path):
    with FakeBooru() as srv:
        _booru(srv, ["artist_a"])
        cfg = scrape_cfg(tmp_path / "first", srv.url)
        scrape(cfg, progress=False)
        image = manifest(cfg)[0]
        other = scrape_cfg(tmp_path / "second", srv.url)  # a fresh store that never saw it
        write(tmp_path / "second" / "optout.csv", f"2026-11-30,takedown notice,,,,,,{image['image_id']},")
        scrape(other, progress=False)
    assert image["image_id"] not in {r["image_id"] for r in manifest(other)}
    assert len(manifest(other)) == len(NAMES) - 1 and rejected(other)[image["post_id"]] == "optout"


def test_a_duplicate_post_s_url_takes_the_kept_image_out(tmp_path):
    with FakeBooru() as srv:
        srv.add_real_posts([NAMES[0]], start_id=50)
        srv.alias("copy.png", NAMES[0])
        srv.posts.append({"id": 40, "file": "data/copy.png", "rating": "g", "tag_string": "1girl"})
        cfg = scrape_cfg(tmp_path, srv.url)
        scrape(cfg, progress=False)
        (kept,) = [r["post_id"] for r in manifest(cfg)]  # the other one is its duplicate
        dup = {"50": "40", "40": "50"}[kept]
        write(tmp_path / "optout.csv", f"2026-11-30,takedown notice,,,{srv.url}/posts/{dup},,,,")
        s = scrape(cfg, progress=False)
    assert s.removed == 1 and manifest(cfg) == []
    log = json.loads((tmp_path / "optout_log.jsonl").read_text().splitlines()[0])
    assert log["post"]["post_id"] == kept and log["matched_post"]["post_id"] == dup


def test_the_stage_refuses_a_malformed_optout_csv_and_changes_nothing(tmp_path):
    with FakeBooru() as srv:
        _booru(srv, ["artist_a", "artist_b"])
        cfg = scrape_cfg(tmp_path, srv.url)
        scrape(cfg, progress=False)
        write(tmp_path / "optout.csv", "2026-11-30,e-mail,artist_b,,,,,,", "30.11.2026,e-mail,artist_a,,,,,,",
              "2026-11-30,,,,,,,zz,")
        snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump({"scrape": json.loads(json.dumps(_plain(cfg)))}))
        n_log = len(srv.log)
        r = subprocess.run([sys.executable, "-m", "tasks.scrape", "--params", str(params)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert len(srv.log) == n_log  # not a single request
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 4 and "3 problems, nothing changed" in errors[0]
    assert "line 3: date '30.11.2026'" in errors[1] and "line 4: reason is blank" in errors[2]
    assert "line 4: image_id 'zz' is not a sha256" in errors[3]
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != params}
    assert after == snapshot


def _plain(cfg):
    import dataclasses

    return dataclasses.asdict(cfg)


def test_a_folder_import_s_opt_out_keeps_the_rejected_table_clock_free(tmp_path):
    """Local files carry no clock: an opt-out's rows in rejected.parquet have no `at`, so two runs over
    the same files give the same table; the audit log still says when."""
    import shutil

    import pyarrow.parquet as pq

    src = tmp_path / "pictures"
    src.mkdir()
    for n in NAMES[:3]:
        shutil.copyfile(REAL / n, src / n)
    tables = []
    for run in ("a", "b"):
        cfg = scrape_cfg(tmp_path / run, "http://127.0.0.1:9", source="folder", folder=str(src))
        scrape(cfg, progress=False)
        write(tmp_path / run / "optout.csv", f"2026-11-30,notice,,,,folder,{NAMES[0]},,")
        s = scrape(cfg, progress=False)
        assert s.removed == 1 and rejected(cfg)[NAMES[0]] == "optout"
        assert json.loads((tmp_path / run / "optout_log.jsonl").read_text().splitlines()[0])["at"]
        tables.append(pq.read_table(cfg.out.rejected))
    assert tables[0].column("at").to_pylist() == [None] * tables[0].num_rows
    a, b = (t.drop(["detail"]) for t in tables)  # the detail names each run's own optout.csv
    assert a.equals(b) and "optout.csv line 2" in tables[0].column("detail")[0].as_py()
