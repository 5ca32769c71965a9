"""One polite HTTP layer shared by every web source (gallery-dl style `request()`).

Starts spaced `HttpSettings.interval` apart across all threads; a 429, or a 503 with
Retry-After, pauses the whole host (tasks.ratelimit.Limiter); retries with backoff and jitter on connection
errors, 5xx and broken-off bodies; only http/https and allowed hosts, redirects checked by hand;
robots.txt as RFC 9309 defines it (protego; unreachable = disallow all, so the stage stops;
4xx = allow all) and its Crawl-delay; downloads streamed to a temp file with a size cap, hashed
on the fly; after N consecutive failures on one host a SourceError stops the stage.

It knows nothing of the scrape stage: callers hand it an `HttpSettings`."""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urljoin, urlsplit

import requests
from protego import Protego

from tasks.errors import Rejected, SourceError
from tasks.fileio import create_temp
from tasks.ratelimit import Limiter, Stopped

log = logging.getLogger(__name__)

PRODUCT = "moeflow"  # the User-Agent's product token, also looked up in robots.txt groups
VERSION = "0.1.0"
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least the first 500 KiB


@dataclass(frozen=True)
class HttpSettings:
    """What the HTTP layer needs to know; a stage builds it from its own config."""

    user_agent: str
    robots_agent: str  # the product token looked up in robots.txt groups
    interval: float = 0.0  # seconds between request starts, all threads and hosts together
    pool_size: int = 8  # connections kept open per host
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 600.0
    max_consecutive_failures: int = 20
    max_bytes: int = 50_000_000
    respect_robots: bool = True
    key: str = "http"  # the config key these came from, for messages


class FetchFailed(Exception):
    """A transient failure (network, 5xx, 401/403, challenge page, cut-off body): the next run retries."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class HostUnreachable(SourceError):
    """robots.txt could not be fetched at all: nothing on that host may be fetched, so the stage stops."""


@dataclass
class Download:
    path: str  # temp file; the caller moves or deletes it
    sha256: str
    size: int
    url: str  # final URL after redirects
    content_type: str
    framed: bool  # the transport checked the length (Content-Length or chunked): no silent cut-off


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


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


HTML_START = re.compile(rb"\s*(?:<!doctype\s+html|<html|<head|<body)", re.I)


def is_html(content_type: str, first_bytes: bytes = b"") -> bool:
    """An HTML page (a login or a bot challenge), by its declared type or its first bytes."""
    ctype = content_type.split(";")[0].strip().lower()
    return ctype in ("text/html", "application/xhtml+xml") or bool(HTML_START.match(first_bytes.lstrip(b"\xef\xbb\xbf")))


class Robots:
    """A parsed robots.txt (RFC 9309), or one of the two blanket answers."""

    def __init__(self, parser: Protego | None = None, *, allow_all: bool = False):
        self._parser = parser
        self._allow_all = allow_all

    @classmethod
    def parse(cls, text: str) -> "Robots":
        return cls(Protego.parse(text))

    def allows(self, url: str, agent: str) -> bool:
        if self._parser is None:
            return self._allow_all
        return self._parser.can_fetch(url, agent)

    def crawl_delay(self, agent: str) -> float:
        return (self._parser.crawl_delay(agent) or 0.0) if self._parser is not None else 0.0


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
    return " ".join(resp.text[:200].split()) or resp.reason or ""


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """`allowed` holds host names and `*.domain` wildcards (any subdomain of domain)."""
    host = host.lower()
    return any(host.endswith(a[1:]) if a.startswith("*.") else host == a for a in allowed)


class PoliteSession:
    def __init__(self, settings: HttpSettings, allowed_hosts: Iterable[str], *,
                 auth: tuple[str, str] | None = None):
        self.s = settings
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.limiter = Limiter(settings.interval)
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=settings.pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = settings.user_agent
        self.session.auth = auth
        self._robots: dict[str, Robots] = {}
        self._robots_lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.requests_made = 0

    # -- policy ------------------------------------------------------------------------
    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise Rejected("bad_scheme", url)
        if not host_allowed(parts.hostname or "", self.allowed_hosts):
            raise Rejected("foreign_host", url)

    def _robots_for(self, url: str) -> Robots:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._robots_lock:
            if origin in self._robots:
                return self._robots[origin]
            try:
                resp = self._send("GET", origin + "/robots.txt", stream=False, check_robots=False)
            except FetchFailed as e:  # RFC 9309: unreachable robots.txt = complete disallow, so stop
                raise HostUnreachable(f"cannot reach {origin}/: {e} (an unreachable robots.txt "
                                      "disallows everything, RFC 9309)") from None
            except Rejected as e:
                log.warning("robots.txt at %s refused (%s): treating every path as disallowed", origin, e)
                robots = Robots(allow_all=False)
            else:
                if resp.status_code >= 400:  # 4xx: no robots.txt, everything allowed
                    robots = Robots(allow_all=True)
                else:
                    robots = Robots.parse(resp.content[:ROBOTS_MAX_BYTES].decode("utf-8", "replace"))
                    delay = robots.crawl_delay(self.s.robots_agent)
                    if delay:
                        log.info("robots.txt at %s asks for Crawl-delay %ss: honoured", origin, delay)
                        self.limiter.slow_down(float(delay))
            self._robots[origin] = robots
            return robots

    def allowed_by_robots(self, url: str) -> bool:
        if not self.s.respect_robots:
            return True
        return self._robots_for(url).allows(url, self.s.robots_agent)

    def record(self, url: str, ok: bool, what: str = "") -> None:
        """Count consecutive failures per host; too many stop the stage."""
        host = host_of(url)
        with self._lock:
            n = self._failures[host] = 0 if ok else self._failures.get(host, 0) + 1
        if n >= self.s.max_consecutive_failures:  # the limit, not n: threads in flight may add one more
            raise SourceError(f"stopping after {self.s.max_consecutive_failures} consecutive failed requests to {host} (last: {what}); "
                              "what was already kept is saved, rerun to resume")

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Stopped("closed")

    # -- the one request() ---------------------------------------------------------------
    def _send(self, method: str, url: str, *, stream: bool, check_robots: bool = True,
              params: dict | None = None) -> requests.Response:
        """Send with retries, backoff, host pauses on 429/503, and hand-checked redirects."""
        self.check_url(url)
        if check_robots and not self.allowed_by_robots(url):
            raise Rejected("robots_disallowed", url)
        attempt = redirects = 0
        while True:
            host = host_of(url)
            probe = self.limiter.acquire(host)
            paused = False
            try:
                with self._lock:
                    self.requests_made += 1
                try:
                    resp = self.session.request(method, url, params=params, stream=stream, allow_redirects=False,
                                                timeout=(self.s.connect_timeout, self.s.read_timeout))
                except (requests.ConnectionError, requests.Timeout) as e:
                    reason = "timeout" if isinstance(e, requests.Timeout) else "connection"
                    last = f"{type(e).__name__} on {url} ({_root_cause(e)})"
                else:
                    arrived = time.monotonic()
                    status = resp.status_code
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    if resp.is_redirect:
                        target = urljoin(resp.url, resp.headers.get("Location", ""))
                        resp.close()
                        self.limiter.answered(host)
                        redirects += 1
                        if redirects > 5:
                            raise Rejected("too_many_redirects", url)
                        try:
                            self.check_url(target)
                        except Rejected as e:
                            raise Rejected("redirect_refused", f"{url} -> {target} ({e.reason})") from None
                        if check_robots and not self.allowed_by_robots(target):
                            raise Rejected("robots_disallowed", target)
                        url, params = target, None
                        continue
                    if status == 429 or (status == 503 and retry_after is not None):
                        resp.close()
                        reason, last, paused = f"http_{status}", f"HTTP {status} on {url}", True
                        if retry_after is None:
                            wait = self.limiter.back_off(host, self.s.backoff, self.s.backoff_max, arrived)
                            log.info("%s without Retry-After: pausing %s for %.1fs", last, host, wait)
                        else:
                            self.limiter.pause(host, arrived + retry_after)
                            if retry_after > self.s.retry_after_max:
                                raise SourceError(
                                    f"{host} asks for a pause of {retry_after:.0f}s ({last}, Retry-After), longer than "
                                    f"{self.s.key}.retry_after_max ({self.s.retry_after_max:.0f}s): stopping; "
                                    "what was already kept is saved, rerun later")
                            log.info("%s: pausing %s for %.1fs (Retry-After)", last, host, retry_after)
                    elif status >= 500:
                        resp.close()
                        self.limiter.answered(host)
                        reason, last = f"http_{status}", f"HTTP {status} on {url}"
                    else:
                        self.limiter.answered(host)
                        return resp
            finally:
                self.limiter.release(host, probe)
            if attempt >= self.s.retries:
                self.record(url, False, last)
                raise FetchFailed(reason, f"{last} (gave up after {attempt + 1} attempts)")
            if not paused:  # a host pause is waited out in the limiter, by every thread
                wait = min(self.s.backoff_max, self.s.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)
                log.debug("%s: retrying in %.1fs", last, wait)
                self._sleep(wait)
            attempt += 1

    def get_json(self, url: str, params: dict | None = None) -> Any:
        """A JSON answer; an error status or a body that is not JSON is a Rejected with the server's words."""
        resp = self._send("GET", url, stream=False, params=params)
        if resp.status_code >= 400:
            raise Rejected(f"http_{resp.status_code}", f"{resp.url}: {_error_message(resp)}")
        try:
            data = resp.json()
        except ValueError:
            kind = "an HTML page" if is_html(resp.headers.get("Content-Type", ""), resp.content[:512]) else "no JSON"
            raise Rejected("not_json", f"{resp.url} answered {kind}: {_error_message(resp)[:120]}") from None
        self.record(url, True)
        return data

    def get_bytes(self, url: str, params: dict | None = None) -> requests.Response:
        resp = self._send("GET", url, stream=False, params=params)
        if resp.status_code >= 400:
            raise Rejected(f"http_{resp.status_code}", resp.url)
        self.record(url, True)
        return resp

    def download(self, url: str, tmp_dir: str) -> Download:
        """Stream `url` into a temp file in tmp_dir. Broken-off bodies are retried here; what
        only the decoder can tell (an unframed body cut short) is the caller's to judge."""
        for attempt in range(self.s.retries + 1):
            resp = self._send("GET", url, stream=True)
            try:
                status = resp.status_code
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if status in (401, 403):  # a login wall or a bot challenge: may pass later
                    reason = "challenge" if (is_html(ctype) or "cf-mitigated" in resp.headers) else f"http_{status}"
                    self.record(url, False, f"HTTP {status} on {url}")
                    note = " (a challenge page)" if reason == "challenge" else ""
                    raise FetchFailed(reason, f"HTTP {status} on {url}{note}")
                if status >= 400:
                    self.record(url, True)
                    raise Rejected(f"http_{status}", url)
                if opted_out(resp.headers):
                    self.record(url, True)
                    raise Rejected("noai", url)
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.s.max_bytes:
                    self.record(url, True)
                    raise Rejected("too_large", f"{url} ({length} bytes)")
                framed = length is not None or "chunked" in resp.headers.get("Transfer-Encoding", "").lower()
                dl = self._stream(resp, url, ctype, tmp_dir, framed)
                if dl is None:
                    self.record(url, False, f"HTML page on {url}")
                    raise FetchFailed("challenge", f"{url} answered an HTML page, not an image")
                if framed:
                    self.record(url, True)
                return dl
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout) as e:
                self.record(url, False, f"{type(e).__name__} reading {url}")
                if attempt >= self.s.retries:
                    raise FetchFailed("truncated", f"body of {url} broken off ({type(e).__name__}) "
                                                   f"after {attempt + 1} attempts") from None
                self._sleep(min(self.s.backoff_max, self.s.backoff * 2 ** attempt) * random.uniform(0.5, 1.0))
            finally:
                resp.close()
        raise AssertionError("unreachable")

    def _stream(self, resp: requests.Response, url: str, ctype: str, tmp_dir: str, framed: bool) -> Download | None:
        """The body into a temp file; None when it is an HTML page (nothing is kept)."""
        h = hashlib.sha256()
        size = 0
        fd, tmp = create_temp(tmp_dir, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in resp.iter_content(chunk_size=1 << 16):
                    if size == 0 and is_html(ctype, chunk[:512]):
                        os.unlink(tmp)
                        return None
                    size += len(chunk)
                    if size > self.s.max_bytes:
                        raise Rejected("too_large", f"{url} (> {self.s.max_bytes} bytes)")
                    h.update(chunk)
                    f.write(chunk)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return Download(tmp, h.hexdigest(), size, resp.url, ctype, framed)

    def close(self) -> None:
        """Wake and stop every thread waiting for a slot, then close the connections."""
        self._stop.set()
        self.limiter.stop()
        self.session.close()
