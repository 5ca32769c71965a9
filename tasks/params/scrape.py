"""The `scrape` section of params.yaml."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Optional

from tasks.errors import ConfigError
from tasks.typed import http_url, positive

RATINGS = ("general", "sensitive", "questionable", "explicit")
FORMATS = ("JPEG", "PNG", "WEBP", "GIF")


@dataclass(frozen=True)
class HttpConfig:
    """The polite HTTP layer shared by every web source."""

    contact: str = "moeflow-user@example.com"  # named in the User-Agent; set your own
    rate_limit: float = 1.0  # requests/s, all threads together; 0 = no limit of ours (a site's declared interval holds)
    concurrency: int = 4  # parallel downloads
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5  # per request, on connection errors, 5xx, 429 and broken-off bodies
    backoff: float = 1.0  # first retry waits ~backoff s, doubling, with jitter
    backoff_max: float = 60.0
    retry_after_max: float = 600.0  # longest Retry-After honoured before giving up
    max_consecutive_failures: int = 20  # on one host; then the stage stops, keeping what it has
    max_bytes: int = 50_000_000  # largest download accepted
    respect_robots: bool = True

    def validate(self, key: str) -> None:
        positive(self.rate_limit, f"{key}.rate_limit", allow_zero=True)
        for name in ("concurrency", "max_consecutive_failures", "max_bytes"):
            positive(getattr(self, name), f"{key}.{name}")
        for name in ("connect_timeout", "read_timeout", "backoff_max", "retry_after_max"):
            positive(getattr(self, name), f"{key}.{name}")
        positive(self.retries, f"{key}.retries", allow_zero=True)
        positive(self.backoff, f"{key}.backoff", allow_zero=True)
        if not re.fullmatch(r"[^\s@]+@[^\s@]+", self.contact):
            raise ConfigError(f"{key}.contact: expected an e-mail address, got {self.contact!r}")


@dataclass(frozen=True)
class FilterConfig:
    ratings: tuple[str, ...] = ("general",)  # kept ratings; posts without a rating pass
    min_width: int = 256
    min_height: int = 256
    max_pixels: int = 40_000_000  # decompression-bomb guard
    formats: tuple[str, ...] = FORMATS
    max_images: int = 10_000  # total kept in data/raw
    blocklist_artists: tuple[str, ...] = ()
    blocklist_tags: tuple[str, ...] = ()

    def validate(self, key: str) -> None:
        for r in self.ratings:
            if r not in RATINGS:
                raise ConfigError(f"{key}.ratings: unknown rating {r!r} (one of {', '.join(RATINGS)})")
        for f in self.formats:
            if f not in FORMATS:
                raise ConfigError(f"{key}.formats: unknown format {f!r} (one of {', '.join(FORMATS)})")
        for name in ("min_width", "min_height"):
            positive(getattr(self, name), f"{key}.{name}", allow_zero=True)
        positive(self.max_pixels, f"{key}.max_pixels")
        positive(self.max_images, f"{key}.max_images")


@dataclass(frozen=True)
class ScrapeOut:
    images: str = "data/raw/images"
    manifest: str = "data/raw/manifest.parquet"
    rejected: str = "data/raw/rejected.parquet"
    boxes: str = "data/raw/boxes.parquet"  # the `release` source: the released faces of each kept image (else empty)
    optout_log: str = "data/raw/optout_log.jsonl"  # the audit log of removals by optout.csv (git-tracked, appended)
    summary: str = "data/raw/summary.json"  # the last run's counts, by reason
    metrics: str = "data/raw/metrics.json"  # the headline counts (DVC metric)


@dataclass(frozen=True)
class ScrapeConfig:
    source: Literal["danbooru", "gelbooru", "getchu", "folder", "release"] = "folder"
    base_url: str = "https://danbooru.donmai.us"
    file_hosts: tuple[str, ...] = ()  # extra hosts images may come from ("*.example.org": any subdomain)
    tags: str = "1girl solo"  # booru search tags
    posts_per_page: Optional[int] = None  # None: the source's own page size
    page_limit: Optional[int] = None  # page numbers up to here, then a cursor; None: the source's own limit
    validate_workers: Optional[int] = None  # processes decoding downloads; None: http.concurrency, at most one per core
    login_env: str = "MOEFLOW_BOORU_LOGIN"  # names of environment variables, never secrets
    api_key_env: str = "MOEFLOW_BOORU_API_KEY"
    folder: str = "../shared/data/real"  # `folder` source
    getchu_games: str = "data/getchu_games.csv"  # `getchu` source: the game list
    min_sellday: Optional[str] = None  # `getchu` source: YYYY-MM-DD, older games skipped
    release: str = "rebuild"  # `release` source: a release's faces.parquet or faces.jsonl, or a directory holding one
    optout: str = "optout.csv"  # takedown requests (git-tracked, human-edited): applied to every source
    pack_images: int = 4000  # kept images per pack file of the image store (tasks/scrape/packs.py)
    # how a local source's files (the folder source, a release's folder) enter the store: `copy` into its
    # packs (the store holds the bytes: `dvc push` carries them), or `reference` them where they are
    # (no second copy; every read checks the bytes against their sha256; the folder must stay)
    folder_import: Literal["copy", "reference"] = "copy"
    http: HttpConfig = field(default_factory=HttpConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    out: ScrapeOut = field(default_factory=ScrapeOut)

    def validate(self, key: str) -> None:
        http_url(self.base_url, f"{key}.base_url")
        positive(self.pack_images, f"{key}.pack_images")
        for name in ("posts_per_page", "page_limit", "validate_workers"):
            if getattr(self, name) is not None:
                positive(getattr(self, name), f"{key}.{name}")
        for h in self.file_hosts:
            if not re.fullmatch(r"(\*\.)?[a-z0-9.-]+", h.lower()):
                raise ConfigError(f"{key}.file_hosts: expected a host name or *.domain, got {h!r}")
        if self.min_sellday is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.min_sellday):
            raise ConfigError(f"{key}.min_sellday: expected YYYY-MM-DD, got {self.min_sellday!r}")
