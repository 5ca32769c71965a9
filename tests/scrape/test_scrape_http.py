"""The polite HTTP layer against a real local server: faults, limits, opt-outs, resume."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pyarrow.parquet as pq
import pytest

from tasks.errors import SourceError
from tasks.fileio import sha256_file
from tasks.scrape.run import scrape
from tests.conftest import ROOT
from tests.support.fakebooru import REAL, FakeBooru, bomb_png
from tests.support.scrape import manifest, rejected, scrape_cfg, sha_of, stored

NAMES = sorted(p.name for p in REAL.iterdir())


def one_image(srv, name=NAMES[0], **post):
    return srv.add_real_posts([name], **post)[0]


@pytest.mark.parametrize("faults", [["500", "503"], ["reset"], ["truncate"], ["429:0"]])
def test_transient_failures_are_retried_until_success(tmp_path, faults):
    with FakeBooru() as srv:
        one_image(srv)
        srv.fault(f"/data/{NAMES[0]}", *faults)
        cfg = scrape_cfg(tmp_path, srv.url)
        s = scrape(cfg, progress=False)
    assert s.kept_new == 1 and s.failed == 0
    assert [r["image_id"] for r in manifest(cfg)] == [sha256_file(REAL / NAMES[0])]  # the full bytes, not half
    assert len(srv.requests_for(f"/data/{NAMES[0]}")) == len(faults) + 1


def test_429_retry_after_is_honoured(tmp_path):
    with FakeBooru() as srv:
        one_image(srv)
        srv.fault("/posts.json", "429:2")
        cfg = scrape_cfg(tmp_path, srv.url)
        scrape(cfg, progress=False)
    (t1, _, _), (t2, _, _) = srv.requests_for("/posts.json")[:2]
    assert t2 - t1 >= 1.9


def test_rate_limit_is_never_exceeded(tmp_path):
    rate = 8.0
    with FakeBooru() as srv:
        srv.add_real_posts(NAMES[:14])
        cfg = scrape_cfg(tmp_path, srv.url, http={"rate_limit": rate, "concurrency": 4})
        scrape(cfg, progress=False)
    times = sorted(t for t, _, _ in srv.log)
    assert len(times) >= 16  # robots.txt, 2 listing pages, 14 images
    gaps = [b - a for a, b in zip(times, times[1:])]
    # request starts are spaced 1/rate apart; a loaded machine delays one arrival and not the next by tens of ms,
    # so a pair's gap is held to half that (an unlimited pool of 4 would send gaps of about 0)
    assert min(gaps) >= 0.5 / rate, gaps
    assert (len(times) - 1) / (times[-1] - times[0]) <= rate * 1.02
    # any one-second window holds at most rate+1 requests
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= rate + 1


def test_bad_downloads_are_rejected_with_reasons_and_not_kept(tmp_path):
    jpg = next(REAL / n for n in NAMES if n.endswith(".jpg"))
    data = jpg.read_bytes()
    with FakeBooru() as srv:
        srv.add_special("truncated.jpg", data[: len(data) // 2], "image/jpeg", id=901)
        srv.add_special("garbage.jpg", os.urandom(5000), "image/jpeg", id=902)
        srv.add_special("page.jpg", b"<html>login</html>", "text/html", id=903)
        srv.add_special("bomb.png", bomb_png(), "image/png", id=904)
        srv.add_special("tiff.png", _tiff_bytes(), "image/png", id=905)
        one_image(srv, start_id=906)
        srv.fault(f"/data/{NAMES[0]}", "noai")
        srv.alias("private.png", NAMES[1])
        srv.posts.append({"id": 907, "file": "private/private.png", "rating": "g", "tag_string": ""})
        srv.add_real_posts([NAMES[2]], start_id=908)
        srv.fault(f"/data/{NAMES[2]}", f"redirect:http://localhost:{srv.port}/data/{NAMES[3]}")
        cfg = scrape_cfg(tmp_path, srv.url)
        s = scrape(cfg, progress=False)
    assert rejected(cfg) == {"901": "truncated", "902": "not_image", "903": "challenge", "904": "too_many_pixels",
                             "905": "format", "906": "noai", "907": "robots_disallowed", "908": "redirect_refused"}
    # an HTML page on an image URL is a login or a bot check, not a verdict on the post: retried next run
    assert {r["post_id"] for r in pq.read_table(cfg.out.rejected).to_pylist() if not r["final"]} == {"903"}
    assert s.kept_new == 0 and manifest(cfg) == []
    assert not srv.requests_for("/private/")  # robots.txt said no: never asked
    assert not srv.requests_for(f"/data/{NAMES[3]}")  # the foreign-host redirect was not followed
    assert not list((tmp_path / "images").glob("*/*")) and not (tmp_path / "images" / ".tmp").exists()


def _tiff_bytes() -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), "red").save(buf, "TIFF")
    return buf.getvalue()


def test_oversized_download_is_refused(tmp_path):
    with FakeBooru() as srv:
        one_image(srv)
        cfg = scrape_cfg(tmp_path, srv.url, http={"max_bytes": 1000})
        scrape(cfg, progress=False)
    assert list(rejected(cfg).values()) == ["too_large"]


def test_robots_disallowing_the_api_stops_with_a_clear_message(tmp_path):
    with FakeBooru(robots="User-agent: *\nDisallow: /posts.json\n") as srv:
        one_image(srv)
        with pytest.raises(SourceError, match=r"robots.txt disallows .*/posts.json"):
            scrape(scrape_cfg(tmp_path, srv.url), progress=False)
        assert not srv.requests_for("/posts.json")


def test_unreachable_host_is_a_clear_error(tmp_path):
    cfg = scrape_cfg(tmp_path, "http://127.0.0.1:9", http={"retries": 1})  # port 9: nothing listens
    with pytest.raises(SourceError, match=r"cannot reach http://127.0.0.1:9/.*use scrape.source: folder"):
        scrape(cfg, progress=False)


def test_consecutive_failures_stop_the_stage_and_keep_what_was_kept(tmp_path):
    with FakeBooru() as srv:
        srv.add_real_posts(NAMES[:2], start_id=100)
        srv.add_real_posts(NAMES[2:8], start_id=50)
        for n in NAMES[2:8]:
            srv.fault(f"/data/{n}", *["500"] * 10)
        cfg = scrape_cfg(tmp_path, srv.url, http={"retries": 1, "max_consecutive_failures": 3, "concurrency": 1})
        with pytest.raises(SourceError, match="stopping after 3 consecutive failed requests"):
            scrape(cfg, progress=False)
    assert {r["image_id"] for r in manifest(cfg)} == sha_of(REAL / n for n in NAMES[:2])


SCRAPE_SCRIPT = ROOT / "tests" / "support" / "scrape_run.py"  # a caller's plain script, no main guard


def test_sigkill_mid_run_then_rerun_gives_exactly_the_expected_set(tmp_path):
    with FakeBooru() as srv:
        srv.add_real_posts()
        for n in NAMES[:3]:  # the same bytes again under other posts and URLs
            srv.alias(f"dup_{n}", n)
        srv.add_real_posts([f"dup_{n}" for n in NAMES[:3]], start_id=10)
        proc = subprocess.Popen([sys.executable, str(SCRAPE_SCRIPT), str(tmp_path), srv.url], cwd=ROOT,
                                stdout=subprocess.DEVNULL)
        journal = tmp_path / "images" / "journal.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not journal.exists() or journal.read_text().count("\n") < 12):
            time.sleep(0.02)
        decoders = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert decoders, "the kill must land while images are being decoded"
        _, alive = psutil.wait_procs(decoders, timeout=10)
        assert not alive, "decoder processes outlived the killed stage"
        first = [json.loads(line) for line in journal.read_text().splitlines() if line.endswith("}")]
        kept_before = {r["url"] for r in first if r["kind"] == "kept"}
        assert 0 < len(kept_before) < len(NAMES), "the kill must land mid-run"
        n_logged = len(srv.log)
        cfg = scrape_cfg(tmp_path, srv.url)
        s = scrape(cfg, progress=False)
        second = {f"{srv.url}{p}" for _, p, _ in srv.log[n_logged:] if p.startswith("/data/")}
        s2 = scrape(cfg, progress=False)  # and a third run has nothing to do
    rows = manifest(cfg)
    assert {r["image_id"] for r in rows} == sha_of(REAL / n for n in NAMES)
    assert len(rows) == len({r["image_id"] for r in rows}) == len(NAMES)
    assert not (second & kept_before), "images kept before the kill were downloaded again"
    assert s.kept_total == len(NAMES)
    held = stored(tmp_path / "images")
    assert sorted(held) == sorted(sha_of(REAL / n for n in NAMES))  # no partial file survives
    assert s2.kept_new == 0 and s2.already_done == len(NAMES) + 3


@pytest.mark.parametrize("value, out", [("noai", True), ("noimageai", True), ("googlebot: noai", True),
                                        ("noindex, nofollow; NoImageAI", True), ("noindex", False), ("", False)])
def test_x_robots_tag_opt_out_parsing(value, out):
    from tasks.http import opted_out

    assert opted_out({"X-Robots-Tag": value}) is out


def test_scrape_from_a_script_without_a_main_guard(tmp_path):
    """The decoders are plain subprocesses: a caller's unguarded script is never run again in them."""
    r = subprocess.run([sys.executable, str(SCRAPE_SCRIPT), str(tmp_path), "http://unused.invalid", str(REAL)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"kept {len(NAMES)}"


def test_the_http_layer_does_not_import_the_scrape_stage():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "tasks.http"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)  # stderr: a line per module imported
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line]
    assert r.returncode == 0 and "tasks.ratelimit" in imported, r.stderr[-2000:]
    assert not [m for m in imported if m.startswith("tasks.scrape")]
