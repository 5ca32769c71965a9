"""Faults on file downloads against a real local server, judged by the server's own clock:
host-wide pauses on 429/503, and which failures are transient (retried) or final."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.errors import SourceError
from tasks.fileio import sha256_file
from tasks.scrape.run import scrape
from tests.support.fakebooru import REAL, FakeBooru
from tests.support.scrape import manifest, scrape_cfg, sha_of, stored

NAMES = sorted(p.name for p in REAL.iterdir())
JPG = next(n for n in NAMES if n.endswith(".jpg"))
PNG = next(n for n in NAMES if n.endswith(".png"))
IN_FLIGHT = 0.2  # requests that reached the server this soon after an answer may have left before it


def _arrivals_after(srv, t: float) -> list[float]:
    return sorted(u for u, _, _ in srv.log if u > t + IN_FLIGHT)


@pytest.mark.parametrize("fault, pause", [("429:2", 2.0), ("503:1", 1.0)])
def test_retry_after_on_a_download_holds_back_every_request_to_the_host(tmp_path, fault, pause):
    rate = 3.0
    with FakeBooru() as srv:
        srv.add_real_posts(NAMES[:12])
        srv.fault(f"/data/{NAMES[3]}", fault)
        cfg = scrape_cfg(tmp_path, srv.url, http={"rate_limit": rate, "concurrency": 4})
        s = scrape(cfg, progress=False)
    assert s.kept_new == 12 and s.failed == 0
    (t_pause,) = [t for t, _, code in srv.responses if code in (429, 503)]
    after = _arrivals_after(srv, t_pause)
    assert after[0] >= t_pause + pause, \
        f"requests {[round(u - t_pause, 2) for u in after[:4]]}s after the {fault}, slots handed out earlier included"
    # the limit starts afresh: no burst of the requests that waited. Judged over every span of arrivals, not
    # gap by gap: one request delayed on its way by a busy machine shortens one gap, never a span of several
    short = [(i, j, round(after[j] - after[i], 3)) for i in range(len(after)) for j in range(i + 1, len(after))
             if after[j] - after[i] < (j - i) / rate - IN_FLIGHT]
    assert not short, f"arrivals i..j closer than (j - i) / rate allows: {short[:5]}"


def test_a_429_on_a_listing_holds_back_the_downloads_too(tmp_path):
    rate = 3.0
    with FakeBooru() as srv:
        srv.add_real_posts(NAMES[:16])
        srv.fault("/posts.json", "pass", "429:2")  # page 1 answers, page 2 gets the 429
        cfg = scrape_cfg(tmp_path, srv.url, http={"rate_limit": rate, "concurrency": 4})
        s = scrape(cfg, progress=False)
    assert s.kept_new == 16
    (t_pause,) = [t for t, path, code in srv.responses if code == 429 and path == "/posts.json"]
    after = _arrivals_after(srv, t_pause)
    assert after[0] >= t_pause + 2.0, f"downloads {[round(u - t_pause, 2) for u in after[:4]]}s after the 429"


def test_after_a_pause_one_request_goes_first_even_without_a_rate_limit(tmp_path):
    with FakeBooru(latency=0.3) as srv:  # every file takes 0.3 s to answer; the 429 comes at once
        srv.add_real_posts(NAMES[:12])
        srv.fault(f"/data/{NAMES[1]}", "429:1")
        cfg = scrape_cfg(tmp_path, srv.url, http={"rate_limit": 0, "concurrency": 4})
        s = scrape(cfg, progress=False)
    assert s.kept_new == 12
    (t_pause,) = [t for t, _, code in srv.responses if code == 429]
    after = _arrivals_after(srv, t_pause)
    assert after[0] >= t_pause + 1.0
    probe_answered = min(t for t, _, _ in srv.responses if t >= after[0])
    burst = [round(u - t_pause, 2) for u in after if u < probe_answered]
    assert len(burst) == 1, f"after the pause, requests at {burst}s before the first one was answered"


def test_429_without_retry_after_backs_off_exponentially_for_the_whole_host(tmp_path):
    backoff = 0.5
    with FakeBooru() as srv:
        srv.add_real_posts(NAMES[:8])
        srv.throttle("/data/", 3)  # the next three downloads, whichever they are, get a bare 429
        cfg = scrape_cfg(tmp_path, srv.url, http={"rate_limit": 3.0, "concurrency": 4, "backoff": backoff,
                                                  "backoff_max": 10.0, "retries": 5})
        s = scrape(cfg, progress=False)
    assert s.kept_new == 8 and s.failed == 0
    slow = sorted(t for t, _, code in srv.responses if code == 429)
    assert len(slow) == 3
    for k, t in enumerate(slow):
        held = backoff * 2 ** k
        early = [round(u - t, 2) for u in _arrivals_after(srv, t) if u < t + held]
        assert not early, f"after 429 #{k + 1} the host should rest {held}s; requests came {early}s after it"


@pytest.mark.parametrize("name", [JPG, PNG])
def test_a_body_cut_short_without_content_length_is_fetched_again_and_kept(tmp_path, name):
    with FakeBooru() as srv:
        srv.add_real_posts([name])
        srv.fault(f"/data/{name}", "truncate-close")  # half the bytes, no Content-Length, connection closed
        cfg = scrape_cfg(tmp_path, srv.url)
        s = scrape(cfg, progress=False)
    assert s.kept_new == 1 and s.rejected == {} and s.failed == 0
    assert [r["image_id"] for r in manifest(cfg)] == [sha256_file(REAL / name)]  # the whole file, not half
    assert len(srv.requests_for(f"/data/{name}")) == 2


def test_a_body_always_cut_short_is_a_transient_failure_retried_next_run(tmp_path):
    with FakeBooru() as srv:
        srv.add_real_posts([JPG])
        srv.fault(f"/data/{JPG}", *["truncate-close"] * 2)
        cfg = scrape_cfg(tmp_path, srv.url, http={"retries": 1})
        s1 = scrape(cfg, progress=False)
        rows = pq.read_table(cfg.out.rejected).to_pylist()
        m1 = json.loads(Path(cfg.out.metrics).read_text())
        s2 = scrape(cfg, progress=False)
    assert s1.kept_new == 0 and s2.kept_new == 1 and pq.read_table(cfg.out.rejected).num_rows == 0
    assert [(r["reason"], r["final"]) for r in rows] == [("truncated", False)]
    # the DVC metric: headline counts (by reason: the summary)
    assert m1 == {"images": 0, "rejected": 0, "skipped": 0, "failed": 1}
    assert json.loads(Path(cfg.out.metrics).read_text()) == {"images": 1, "rejected": 0, "skipped": 0, "failed": 0}
    assert dict(s1.failures) == {"truncated": 1} and s1.rejected == {} and rows[0]["kind"] == "failed"


@pytest.mark.parametrize("fault, reason", [("403-challenge", "challenge"), ("challenge", "challenge"),
                                           ("403", "http_403"), ("401", "http_401")])
def test_a_challenge_page_or_a_refusal_is_retried_by_the_next_run(tmp_path, fault, reason):
    with FakeBooru() as srv:
        srv.add_real_posts([NAMES[0]])
        srv.fault(f"/data/{NAMES[0]}", fault)
        cfg = scrape_cfg(tmp_path, srv.url)
        s1 = scrape(cfg, progress=False)
        rows = pq.read_table(cfg.out.rejected).to_pylist()
        held = stored(tmp_path / "images")
        s2 = scrape(cfg, progress=False)
    assert s1.kept_new == 0 and s2.kept_new == 1 and s2.already_done == 0
    assert {r["image_id"] for r in manifest(cfg)} == sha_of([REAL / NAMES[0]])
    assert [(r["reason"], r["final"]) for r in rows] == [(reason, False)]
    assert held == []  # the HTML page was not stored
    assert dict(s1.failures) == {reason: 1} and s1.rejected == {} and rows[0]["kind"] == "failed"


def test_a_host_that_only_answers_challenges_stops_the_stage(tmp_path):
    with FakeBooru() as srv:
        srv.add_real_posts(NAMES[:2], start_id=100)
        srv.add_real_posts(NAMES[2:8], start_id=50)
        for n in NAMES[2:8]:
            srv.fault(f"/data/{n}", "403-challenge")
        cfg = scrape_cfg(tmp_path, srv.url, http={"max_consecutive_failures": 3, "concurrency": 1})
        with pytest.raises(SourceError, match=r"stopping after 3 consecutive failed requests to 127\.0\.0\.1"):
            scrape(cfg, progress=False)
    assert {r["image_id"] for r in manifest(cfg)} == sha_of(REAL / n for n in NAMES[:2])
    assert {r["final"] for r in pq.read_table(cfg.out.rejected).to_pylist()} == {False}
