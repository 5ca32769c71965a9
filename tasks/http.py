"""One polite HTTP layer shared by every web source (gallery-dl style `request()`).

- a User-Agent naming the project and a contact address;
- a global rate limit (requests per second) that is never exceeded, shared by all threads;
- connect/read timeouts; retries with exponential backoff and jitter on connection errors
  and 5xx; 429 honours Retry-After (and pauses every thread);
- only http/https and allowed hosts, redirects followed by hand and checked;
- robots.txt honoured (RFC 9309: unreachable robots.txt = disallow all, so the stage stops), Crawl-delay too;
- downloads streamed to a temp file with a size cap, hashed on the fly;
- after N consecutive failures a SourceError stops the stage."""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import random
import re
import tempfile
import threading
import time
import urllib.robotparser
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

import requests

from tasks.errors import SourceError
from tasks.scrape.config import HttpConfig

log = logging.getLogger(__name__)

PRODUCT = "moeflow"
VERSION = "0.1.0"


class FetchRejected(Exception):
    """A URL that will not be fetched or kept, for a stable reason (no retry helps)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class FetchFailed(Exception):
    """Retries exhausted on a transient problem (network, 5xx, 429)."""


@dataclass
class Download:
    path: str  # temp file; the caller moves or deletes it
    sha256: str
    size: int
    url: str  # final URL after redirects
    content_type: str


class RateLimiter:
    """Start times at least 1/rate apart across all threads; `pause` delays everyone.

    A 0.5% margin absorbs network jitter, so the server never sees more than `rate`."""

    MARGIN = 1.005

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.interval = self.MARGIN / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock

    def slow_down(self, interval: float) -> None:
        with self._lock:
            self.interval = max(self.interval, interval)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def opted_out(headers) -> bool:
    """True when X-Robots-Tag carries noai / noimageai."""
    values = ",".join(v for k, v in headers.items() if k.lower() == "x-robots-tag")
    return bool(set(re.split(r"[\s,;:]+", values.lower())) & {"noai", "noimageai"})


def _root_cause(e: BaseException) -> str:
    while e.__context__ is not None and e.__context__ is not e:
        e = e.__context__
    return f"{type(e).__name__}: {e}"[:160]


def _error_message(resp: requests.Response) -> str:
    """The server's own words for an error response (boorus send {"message": ...})."""
    try:
        body = resp.json()
        if isinstance(body, dict):
            return str(body.get("message") or body.get("reason") or body)
    except ValueError:
        pass
    return resp.text[:200].strip() or resp.reason or ""


class PoliteSession:
    def __init__(self, cfg: HttpConfig, allowed_hosts: set[str], *, extra_headers: dict | None = None,
                 auth: tuple[str, str] | None = None):
        self.cfg = cfg
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.user_agent = f"{PRODUCT}/{VERSION} (+mailto:{cfg.contact})"
        self.limiter = RateLimiter(cfg.rate_limit)
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(4, cfg.concurrency * 2), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": self.user_agent, **(extra_headers or {})})
        self.session.auth = auth
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}
        self._robots_lock = threading.Lock()
        self._failures = 0
        self._fail_lock = threading.Lock()
        self.requests_made = 0

    # -- policy ------------------------------------------------------------------------
    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchRejected("bad_scheme", url)
        if (parts.hostname or "").lower() not in self.allowed_hosts:
            raise FetchRejected("foreign_host", url)

    def _robots_for(self, url: str) -> urllib.robotparser.RobotFileParser | None:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._robots_lock:
            if origin in self._robots:
                return self._robots[origin]
            rp = urllib.robotparser.RobotFileParser(origin + "/robots.txt")
            try:
                resp = self._send("GET", origin + "/robots.txt", stream=False, check_robots=False)
            except FetchFailed as e:  # RFC 9309: unreachable robots.txt = complete disallow, so stop
                raise SourceError(f"cannot reach {origin}/: {e}. Check scrape.base_url and the network; "
                                  "without internet, use scrape.source: folder") from None
            except FetchRejected as e:
                log.warning("robots.txt at %s refused (%s): treating every path as disallowed", origin, e)
                rp.disallow_all = True
            else:
                if resp.status_code >= 400:  # 4xx: no robots.txt, everything allowed
                    rp.allow_all = True
                else:
                    rp.parse(resp.text.splitlines())
                    delay = rp.crawl_delay(PRODUCT) or 0
                    if delay:
                        log.info("robots.txt at %s asks for Crawl-delay %ss: honoured", origin, delay)
                        self.limiter.slow_down(float(delay))
            self._robots[origin] = rp
            return rp

    def allowed_by_robots(self, url: str) -> bool:
        if not self.cfg.respect_robots:
            return True
        rp = self._robots_for(url)
        return rp is None or rp.can_fetch(PRODUCT, url)

    def _record(self, ok: bool, what: str) -> None:
        with self._fail_lock:
            self._failures = 0 if ok else self._failures + 1
            n = self._failures
        if n >= self.cfg.max_consecutive_failures:
            raise SourceError(f"stopping after {n} consecutive failed requests (last: {what}); "
                              "what was already kept is saved, rerun to resume")

    # -- the one request() ---------------------------------------------------------------
    def _send(self, method: str, url: str, *, stream: bool, check_robots: bool = True, params: dict | None = None) -> requests.Response:
        """Send with retries, backoff, 429 handling, and hand-checked redirects."""
        self.check_url(url)
        if check_robots and not self.allowed_by_robots(url):
            raise FetchRejected("robots_disallowed", url)
        attempt = 0
        redirects = 0
        last = ""
        while True:
            self.limiter.acquire()
            self.requests_made += 1
            try:
                resp = self.session.request(method, url, params=params, stream=stream, allow_redirects=False,
                                            timeout=(self.cfg.connect_timeout, self.cfg.read_timeout))
            except (requests.ConnectionError, requests.Timeout) as e:
                last = f"{type(e).__name__} on {url} ({_root_cause(e)})"
                wait = None
            else:
                if resp.is_redirect:
                    target = urljoin(resp.url, resp.headers.get("Location", ""))
                    resp.close()
                    redirects += 1
                    if redirects > 5:
                        raise FetchRejected("too_many_redirects", url)
                    try:
                        self.check_url(target)
                    except FetchRejected as e:
                        raise FetchRejected("redirect_refused", f"{url} -> {target} ({e.reason})") from None
                    if check_robots and not self.allowed_by_robots(target):
                        raise FetchRejected("robots_disallowed", target)
                    url, params = target, None
                    continue
                if resp.status_code == 429 or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code} on {url}"
                    wait = parse_retry_after(resp.headers.get("Retry-After")) if resp.status_code in (429, 503) else None
                    resp.close()
                    if wait is not None and wait > self.cfg.retry_after_max:
                        raise FetchFailed(f"{last}: Retry-After {wait:.0f}s exceeds http.retry_after_max")
                else:
                    self._record(True, url)
                    return resp
            if attempt >= self.cfg.retries:
                self._record(False, last)
                raise FetchFailed(f"{last} (gave up after {attempt + 1} attempts)")
            if wait is None:
                wait = min(self.cfg.backoff_max, self.cfg.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)
            else:
                self.limiter.pause(wait)  # Retry-After holds back every thread
            log.debug("%s: retrying in %.1fs", last, wait)
            time.sleep(wait)
            attempt += 1

    def get_json(self, url: str, params: dict | None = None) -> Any:
        for attempt in range(self.cfg.retries + 1):
            resp = self._send("GET", url, stream=False, params=params)
            if resp.status_code >= 400:
                raise FetchRejected(f"http_{resp.status_code}", f"{resp.url}: {_error_message(resp)}")
            try:
                return resp.json()
            except ValueError:
                if attempt >= self.cfg.retries:
                    raise FetchFailed(f"{resp.url} did not return JSON") from None
        raise AssertionError("unreachable")

    def get_bytes(self, url: str, params: dict | None = None) -> requests.Response:
        resp = self._send("GET", url, stream=False, params=params)
        if resp.status_code >= 400:
            raise FetchRejected(f"http_{resp.status_code}", resp.url)
        return resp

    def download(self, url: str, tmp_dir: str) -> Download:
        """Stream `url` into a temp file in tmp_dir. Truncated bodies are retried."""
        for attempt in range(self.cfg.retries + 1):
            resp = self._send("GET", url, stream=True)
            try:
                if resp.status_code >= 400:
                    raise FetchRejected(f"http_{resp.status_code}", url)
                if opted_out(resp.headers):
                    raise FetchRejected("noai", url)
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
                    raise FetchRejected("not_image", f"{url} ({ctype})")
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.cfg.max_bytes:
                    raise FetchRejected("too_large", f"{url} ({length} bytes)")
                return self._stream(resp, url, ctype, tmp_dir)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout) as e:
                self._record(False, f"{type(e).__name__} reading {url}")
                if attempt >= self.cfg.retries:
                    raise FetchFailed(f"body of {url} broken off ({type(e).__name__}) after {attempt + 1} attempts") from None
                time.sleep(min(self.cfg.backoff_max, self.cfg.backoff * 2 ** attempt) * random.uniform(0.5, 1.0))
            finally:
                resp.close()
        raise AssertionError("unreachable")

    def _stream(self, resp: requests.Response, url: str, ctype: str, tmp_dir: str) -> Download:
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in resp.iter_content(chunk_size=1 << 16):
                    size += len(chunk)
                    if size > self.cfg.max_bytes:
                        raise FetchRejected("too_large", f"{url} (> {self.cfg.max_bytes} bytes)")
                    h.update(chunk)
                    f.write(chunk)
        except BaseException:
            os.unlink(tmp)
            raise
        return Download(tmp, h.hexdigest(), size, resp.url, ctype)

    def close(self) -> None:
        self.session.close()
