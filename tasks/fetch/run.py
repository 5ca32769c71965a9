"""Fetch the pinned external files: already there and verified, else a verified local mirror,
else a download through the shared HTTP layer (tasks.http), verified before it is kept.
A file that cannot be had is one line naming it and what to do."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from tasks.errors import Rejected, SourceError
from tasks.fileio import atomic_copy, sha256_file
from tasks.params.fetch import ExternalFile, FetchConfig, FetchHttp

log = logging.getLogger(__name__)


@dataclass
class FetchSummary:
    got: dict[str, str] = field(default_factory=dict)  # path -> how (present | mirror <path> | downloaded)

    def lines(self) -> list[str]:
        return [f"{path}: {how}" for path, how in self.got.items()]

    def markdown(self) -> str:
        return "# fetch\n\n" + "".join(f"- `{path}`: {how}\n" for path, how in self.got.items())


def _verified(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _download(f: ExternalFile, http: FetchHttp, dest: Path) -> None:
    from tasks.http import PRODUCT, VERSION, FetchFailed, HttpSettings, PoliteSession, host_of

    # one pinned file, not a crawl: robots.txt (for crawlers, RFC 9309) is not consulted
    settings = HttpSettings(user_agent=f"{PRODUCT}/{VERSION} (+mailto:{http.contact})", robots_agent=PRODUCT,
                            connect_timeout=http.connect_timeout, read_timeout=http.read_timeout,
                            retries=http.retries, max_bytes=http.max_bytes, respect_robots=False, key="fetch.http")
    session = PoliteSession(settings, [host_of(f.url)])
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        dl = session.download(f.url, str(dest.parent))
    except (FetchFailed, Rejected, SourceError) as e:
        raise SourceError(f"fetch: cannot download {f.url} ({e}); put a verified copy at {dest} or list one "
                          "in its mirrors") from None
    finally:
        session.close()
    if dl.sha256 != f.sha256:
        Path(dl.path).unlink(missing_ok=True)
        raise SourceError(f"fetch: {f.url} has sha256 {dl.sha256}, not the pinned {f.sha256}: refused")
    os.replace(dl.path, dest)


def fetch_file(f: ExternalFile, http: FetchHttp) -> str:
    dest = Path(f.path)
    if not dest.is_symlink() and _verified(dest, f.sha256):
        return "present, sha256 verified"
    for m in f.mirrors:
        if _verified(Path(m), f.sha256):
            atomic_copy(m, dest)  # a real file: DVC caches it; an old symlink is replaced
            return f"copied from the mirror {m}, sha256 verified"
        if Path(m).exists():
            log.warning("fetch: the mirror %s does not match sha256 %s: skipped", m, f.sha256)
    _download(f, http, dest)
    return f"downloaded from {f.url}, sha256 verified"


def run_fetch(cfg: FetchConfig) -> FetchSummary:
    s = FetchSummary()
    s.got[cfg.cascade.path] = fetch_file(cfg.cascade, cfg.http)
    return s
